//! Releasing held items when they fall due: the emulated latency of the data plane
//! (datagrams) and of the control plane (gossip) share it.

use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Receives `(due, item)` pairs and hands each item to `deliver` when due, in due order
/// (equal due times in arrival order). Ends when the sender is gone or `deliver` returns
/// false.
pub async fn release<T, F: Future<Output = bool>>(
    mut held_rx: mpsc::UnboundedReceiver<(Instant, T)>,
    mut deliver: impl FnMut(T) -> F,
) {
    let mut held: BTreeMap<(Instant, u64), T> = BTreeMap::new();
    let mut n = 0u64;
    loop {
        let next = held.keys().next().map(|(t, _)| *t);
        tokio::select! {
            got = held_rx.recv() => match got {
                Some((due, item)) => {
                    held.insert((due, n), item);
                    n += 1;
                }
                None => return,
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while let Some(entry) = held.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    if !deliver(entry.remove()).await {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn items_come_out_in_due_order() {
        let (tx, rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let ms = Duration::from_millis;
        for (due, tag) in [(40, 1), (10, 2), (40, 3), (25, 4)] {
            tx.send((now + ms(due), tag)).unwrap();
        }
        let mut order = Vec::new();
        release(rx, |tag| {
            order.push(tag);
            std::future::ready(order.len() < 4)
        })
        .await;
        assert_eq!(order, vec![2, 4, 1, 3]);
        assert!(now.elapsed() >= ms(40));
    }
}
