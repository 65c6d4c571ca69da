//! Recovery planning: after a set of servers failed, which replacement fetches which group's
//! state from which alive server (DESIGN.md §8, step 3).
//!
//! A replacement at position s needs every group s was a member of. The source of G(j) is the
//! member nearest to s that holds the most state for s's role in the group:
//! - s heads G(j) (j = s): the nearest alive successor s+1, …, s+f, whose MAX becomes the new
//!   head's dependency vector;
//! - s replicates G(j): the nearest alive predecessor s−1, …, j (the head counts), whose store
//!   and retained logs cover everything s had; if all of them failed, the nearest alive successor.
//!
//! A source a replacement could not fetch from (`avoid`) is alive as far as anyone knows (the
//! failure detector says when a server is dead): it is passed over for the next member by the
//! same rule, taken again when no other member is left, and never counted among the failed.

use std::collections::BTreeSet;

use ftc_chain::ring::{MbIndex, Ring, ServerId};

/// One state transfer: `to` (a replacement) fetches `group` from `source` (alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transfer {
    pub to: ServerId,
    pub group: MbIndex,
    /// Whether `to` heads `group`.
    pub as_head: bool,
    pub source: ServerId,
}

/// Why no recovery plan exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{server} is not on the ring of {servers} servers")]
    NotInRing { server: ServerId, servers: usize },
    #[error("every member of G({group}) failed: its state is lost")]
    NoAliveMember { group: MbIndex },
    #[error("{failed} servers failed, more than the {f} the chain tolerates")]
    TooManyFailures { failed: usize, f: usize },
    #[error("this deployment keeps no replicas (a baseline): failed servers are not recovered")]
    NotRecovered,
    #[error(
        "no alive member of G({group}) served its state to the replacement at {to} in \
         {attempts} attempts"
    )]
    Unserved {
        group: MbIndex,
        to: ServerId,
        attempts: u32,
    },
}

/// The transfers that recover every server in `failed`: one per group of each failed server,
/// in order of server, then group (head role first); sources in `avoid` only where no other
/// member is left.
pub fn plan(
    ring: &Ring,
    failed: &BTreeSet<ServerId>,
    avoid: &BTreeSet<ServerId>,
) -> Result<Vec<Transfer>, PlanError> {
    check_on_ring(ring, failed)?;
    let transfers = failed
        .iter()
        .flat_map(|&to| ring.groups_of(to).map(move |(group, _)| (to, group)))
        .map(|(to, group)| transfer(ring, failed, avoid, to, group))
        .collect::<Result<Vec<_>, _>>()?;
    check_count(ring, failed.len())?;
    Ok(transfers)
}

/// `transfer` again after a fetch from its source `unreachable` failed: the next member by the
/// same rule, with `unreachable` avoided too; `unreachable` itself again when every other
/// member failed or is avoided.
///
/// # Panics
/// If `transfer.group` is not a middlebox of `ring` or `transfer.to` is not one of its members
/// (a transfer that [`plan`] on this ring cannot have made).
pub fn replan(
    ring: &Ring,
    failed: &BTreeSet<ServerId>,
    avoid: &BTreeSet<ServerId>,
    transfer: &Transfer,
    unreachable: ServerId,
) -> Result<Transfer, PlanError> {
    let mut avoid = avoid.clone();
    avoid.insert(unreachable);
    check_on_ring(ring, failed.iter().chain([&transfer.to, &unreachable]))?;
    let again = self::transfer(ring, failed, &avoid, transfer.to, transfer.group)?;
    check_count(ring, failed.len())?;
    Ok(again)
}

fn check_on_ring<'a>(
    ring: &Ring,
    servers: impl IntoIterator<Item = &'a ServerId>,
) -> Result<(), PlanError> {
    match servers
        .into_iter()
        .find(|s| usize::from(s.0) >= ring.servers())
    {
        Some(&server) => Err(PlanError::NotInRing {
            server,
            servers: ring.servers(),
        }),
        None => Ok(()),
    }
}

fn check_count(ring: &Ring, failed: usize) -> Result<(), PlanError> {
    if failed > ring.f() {
        return Err(PlanError::TooManyFailures {
            failed,
            f: ring.f(),
        });
    }
    Ok(())
}

/// The transfer of `group` to `to`, a member of it: predecessors nearest first, then
/// successors; the first alive one not avoided, else the first alive one.
fn transfer(
    ring: &Ring,
    failed: &BTreeSet<ServerId>,
    avoid: &BTreeSet<ServerId>,
    to: ServerId,
    group: MbIndex,
) -> Result<Transfer, PlanError> {
    let members: Vec<ServerId> = ring.group(group).collect();
    let p = ring
        .position_in_group(group, to)
        .expect("transfers are planned to members of the group");
    let predecessors = members[..p].iter().rev();
    let successors = members[p + 1..].iter();
    let mut alive = predecessors
        .chain(successors)
        .filter(|s| !failed.contains(s));
    let source = alive
        .clone()
        .find(|s| !avoid.contains(s))
        .or_else(|| alive.next())
        .ok_or(PlanError::NoAliveMember { group })?;
    Ok(Transfer {
        to,
        group,
        as_head: p == 0,
        source: *source,
    })
}

#[cfg(test)]
mod tests;
