//! Awaiting many futures at once, results in input order (no extra crate for one helper).

use std::future::Future;
use std::task::Poll;

pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => out[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn keeps_order_and_runs_concurrently() {
        let start = std::time::Instant::now();
        let futs: Vec<_> = (0..5u64)
            .map(|i| async move {
                tokio::time::sleep(std::time::Duration::from_millis(100 - i * 10)).await;
                i
            })
            .collect();
        assert_eq!(super::join_all(futs).await, vec![0, 1, 2, 3, 4]);
        assert!(start.elapsed() < std::time::Duration::from_millis(400));
    }
}
