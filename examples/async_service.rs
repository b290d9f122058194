//! An async service whose request handlers wait on shmproc queues fed by
//! worker processes, without a thread per waiting handler.
//!
//! Worker processes (forked before the runtime starts) take jobs from a
//! shared `Queue<Job>` with the blocking `recv` and answer on the reply
//! queue of the handler that asked. The tokio server runs one task per
//! client; each handler sends its job with `send_async` and awaits the
//! answer with `recv_async`, so 32 handlers waiting at once cost no thread
//! each: the process's one `shmproc-async` helper thread watches every
//! reply queue. At the end the job queue is closed, the workers see
//! `Disconnected` and exit, and the server awaits them with `join_async`.

use shmproc::{Process, Queue, RecvError};

const WORKERS: usize = 2;
const HANDLERS: usize = 32;
const REQUESTS: u64 = 50;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy)]
struct Job {
    handler: u32,
    n: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let jobs = Queue::<Job>::bounded(64)?;
    let replies: Vec<Queue<u64>> = (0..HANDLERS).map(|_| Queue::<u64>::bounded(4)).collect::<Result<_, _>>()?;
    // Workers first: this process is still single-threaded, so fork is fine.
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (jobs, replies) = (jobs.receiver(), replies.clone());
        workers.push(Process::builder().name(format!("worker-{w}")).spawn(move || {
            let mut served = 0u64;
            loop {
                match jobs.recv() {
                    Ok(job) => {
                        let Some(reply) = replies.get(job.handler as usize) else { continue };
                        reply.send(&(job.n * job.n)).unwrap();
                        served += 1;
                    }
                    Err(RecvError::Disconnected) => break,
                    Err(e) => panic!("worker: {e}"),
                }
            }
            // The exit code tells the server how much this worker did.
            std::process::exit(i32::from(served > 0));
        })?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let total = rt.block_on(async {
        let mut handlers = Vec::new();
        for (h, reply) in replies.into_iter().enumerate() {
            let jobs = jobs.sender();
            handlers.push(tokio::spawn(async move {
                let mut sum = 0u64;
                for n in 0..REQUESTS {
                    jobs.send_async(&Job { handler: h as u32, n }).await.expect("send job");
                    let squared = reply.recv_async().await.expect("reply");
                    assert_eq!(squared, n * n, "handler {h} got another's reply");
                    sum += squared;
                }
                sum
            }));
        }
        let mut total = 0u64;
        for h in handlers {
            total += h.await.expect("handler");
        }
        total
    });
    println!(
        "{HANDLERS} handlers served {} requests through {WORKERS} worker processes; sum of squares {total}",
        HANDLERS as u64 * REQUESTS
    );
    println!("helper threads used: {}", shmproc::async_wait::helper_threads());
    jobs.close();
    let busy = rt.block_on(async {
        let mut busy = 0;
        for w in &mut workers {
            busy += w.join_async().await.expect("join");
        }
        busy
    });
    println!("workers exited after the queue closed ({busy} of {WORKERS} served requests)");
    Ok(())
}
