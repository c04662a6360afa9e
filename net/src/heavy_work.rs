//! Heavy stretches of request work take turns on a shard thread, one at a time, each
//! after the thread's queue of ready tasks has turned once.
//!
//! A shard thread runs its ready tasks in the order they became ready, each until it
//! next waits. A task that parses a 1,000-event batch, or writes its 1,000 results, keeps
//! the thread for a millisecond or more; when several such tasks are ready together they
//! run back to back, and every request that became ready behind them (a single event,
//! an answer from another shard) waits for all of them. In the hostile mix, one client's
//! closed loop of maximum-size batches and six deep-page readers did that to an honest
//! client's requests at each of their steps.
//!
//! So a heavy stretch first takes its thread's one [`Permit`], and keeps it until the
//! queue has turned once after the stretch ([`run`] yields before letting go). Between
//! two heavy stretches, every task that was ready runs: light work waits for at most one
//! heavy stretch, however many heavy requests are queued. Light work (a single event, a
//! small page) never takes the permit. Heavy work loses no throughput to this: the
//! thread runs one stretch at a time anyway; it only changes the order.

use std::cell::RefCell;
use std::rc::Rc;

use tokio::sync::Semaphore;

/// Request bodies and responses from this size up are parsed and written as heavy
/// work. A single event's body is a few hundred bytes; a batch of 64 events is about
/// this size, and its parse takes some 50 µs on the machines of BENCHMARKS.md.
pub const HEAVY_BYTES_MIN: usize = 16 * 1024;

/// Entries from which a list of results (a batch's, a page's) is built and written as
/// heavy work.
pub const HEAVY_ITEMS_MIN: usize = 64;

thread_local! {
    /// This thread's one permit. A `Semaphore` wakes its waiters in the order they came.
    static PERMIT: RefCell<Option<Rc<Semaphore>>> = const { RefCell::new(None) };
}

fn permit() -> Rc<Semaphore> {
    PERMIT.with(|permit| {
        permit
            .borrow_mut()
            .get_or_insert_with(|| Rc::new(Semaphore::new(1)))
            .clone()
    })
}

/// Runs `work`, a heavy stretch without awaits, once this thread's permit is free; lets
/// the permit go only after the thread's ready tasks have run once (see the module's
/// documentation).
pub async fn run<R>(work: impl FnOnce() -> R) -> R {
    let semaphore = permit();
    let held = semaphore
        .acquire()
        .await
        .expect("the permit's semaphore is never closed");
    let result = work();
    tokio::task::yield_now().await;
    drop(held);
    result
}

/// Runs `work` as a heavy stretch when `heavy`, at once otherwise.
pub async fn run_if<R>(heavy: bool, work: impl FnOnce() -> R) -> R {
    if heavy {
        run(work).await
    } else {
        work()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Three heavy tasks ready together, and a light task that becomes ready while the
    /// first runs: the light one runs after the first heavy stretch, not after all three.
    #[test]
    fn light_work_waits_for_one_heavy_stretch_not_for_all() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        tokio::task::LocalSet::new().block_on(&runtime, async {
            let (light_tx, light_rx) = tokio::sync::oneshot::channel::<()>();
            let light_tx = Rc::new(RefCell::new(Some(light_tx)));
            let mut tasks = Vec::new();
            for i in 0..3 {
                let order = order.clone();
                let light_tx = light_tx.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    run(|| {
                        order.borrow_mut().push(format!("heavy {i}"));
                        // The first stretch makes the light task ready.
                        if let Some(tx) = light_tx.borrow_mut().take() {
                            tx.send(()).unwrap();
                        }
                    })
                    .await
                }));
            }
            let light_order = order.clone();
            tasks.push(tokio::task::spawn_local(async move {
                light_rx.await.unwrap();
                light_order.borrow_mut().push("light".to_owned());
            }));
            for task in tasks {
                task.await.unwrap();
            }
        });
        assert_eq!(
            *order.borrow(),
            ["heavy 0", "light", "heavy 1", "heavy 2"],
            "the light task waited behind more than one heavy stretch"
        );
    }

    #[test]
    fn light_work_runs_at_once() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let semaphore = permit();
        let _held = semaphore.try_acquire().unwrap();
        // The permit is taken, yet light work does not wait for it.
        assert_eq!(runtime.block_on(run_if(false, || 7)), 7);
    }
}
