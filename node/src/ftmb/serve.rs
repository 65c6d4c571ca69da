//! The FTMB stations' threads over the in-memory transport: each runs a [`Station`] on the
//! runtime's messages ([`Msg`]) in batches, as [`crate::serve`] runs a [`crate::Server`].

use crossbeam_channel::Receiver;

use super::station::Station;
use crate::serve::{recv_until, send_frame, Batch, Hops, Msg, Shared, Sink};

/// Run `station` (a thread called `name`) until stopped: customer packets and frames in, its
/// outputs to the stations `routes` reach or out of the chain; a master's snapshots when due.
/// The station (for its counts) and what left the chain through it.
pub(super) fn serve_station<'a, C: Fn() -> u64>(
    mut station: Station<'a, u64>,
    name: String,
    rx: &Receiver<Msg>,
    routes: &Hops,
    shared: &Shared<'_, C>,
) -> (Station<'a, u64>, Sink) {
    crate::serve::name_thread(&name);
    let mut sink = Sink::new(name);
    let mut batch = Batch::default();
    let mut congestion = shared.congestion();
    let me = station.id();
    let now = &shared.now;
    loop {
        let Ok(first) = recv_until(rx, station.poll_timeout(), now) else {
            break;
        };
        if station.poll_timeout().is_some_and(|at| at <= now()) {
            station.handle_timeout(now());
        }
        let (mut stop, mut left) = (false, 0);
        let t = now();
        batch.fill(first, rx);
        for msg in batch.by_ref() {
            match msg {
                Msg::Ingress(packet) => {
                    if let Err(packet) = station.handle_ingress(t, packet) {
                        // Not the chain's entry: it left the chain.
                        let _ = shared.recycle.send(packet.bytes);
                        left += 1;
                    }
                }
                Msg::Frame { from, frame, .. } => station.handle_frame(t, from, frame),
                Msg::Stop => stop = true,
                // The baselines recover nothing: no fence, transfer or kill reaches them.
                Msg::Fence { .. }
                | Msg::Export { .. }
                | Msg::Resume { .. }
                | Msg::Nudge
                | Msg::Spare(_)
                | Msg::Kill => {}
            }
        }
        station.end_batch(t);
        // The batch's frames go on together after it, as a server's do (on ch-2 this measured
        // faster than sending each as soon as it is made).
        while let Some(out) = station.poll_output() {
            // FTMB frames are of epoch 0: the baselines recover nothing.
            left += sink.act(out, t, shared, |to, frame| {
                send_frame(routes, me, 0, 0, to, frame)
            });
        }
        if left > 0 {
            let _ = shared.credit.send(left);
        }
        sink.busy_ns += now().saturating_sub(t);
        congestion.set(station.congested());
        if stop {
            break;
        }
    }
    sink.violations.extend(station.take_violations());
    (station, sink)
}
