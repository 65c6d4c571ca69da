//! Unit tests of the buffer, named after the thesis sections they check.
