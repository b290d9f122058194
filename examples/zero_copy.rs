//! A zero-copy message: a struct with a `String` and a `Vec` is serialised by
//! rkyv straight into the queue's shared memory, and the receiver reads it in
//! place through `recv_ref` (validated with bytecheck first), without
//! deserialising or copying it.

use shmproc::{Process, Queue};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct Reading {
    sensor: String,
    samples: Vec<f32>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let q = Queue::<Reading>::builder().capacity(8).message_size(64 * 1024).build()?;
    let tx = q.clone();
    let mut producer = Process::spawn(move || {
        for k in 0..3 {
            let r = Reading { sensor: format!("probe-{k}"), samples: (0..1000).map(|i| (i * k) as f32).collect() };
            tx.send(&r).unwrap();
        }
    })?;
    for _ in 0..3 {
        let r = q.recv_ref()?; // &ArchivedReading inside the slot
        let sum: f32 = r.samples.iter().map(|x| x.to_native()).sum();
        println!("{}: {} samples, sum {sum}", r.sensor, r.samples.len());
    } // each guard frees its slot when dropped
    producer.join()?;
    Ok(())
}
