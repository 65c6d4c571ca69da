//! Property test: random frames through the buffer, output commit and per-flow order checked after every step.
