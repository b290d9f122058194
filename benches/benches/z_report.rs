//! The one-command bench report: after the other benches of this package have
//! run (`cargo bench -p shmproc-benches` runs them all, this one last), reads
//! criterion's estimates and the CPython baseline, prints one table of
//! shmproc against each baseline with the ratio, and writes
//! `target/shmproc-bench/report.csv` and `report.svg`; then prints again the
//! `peers` bench's ranking table and scale section
//! (`target/shmproc-bench/peers.txt`) and the `mpmc_scaling` bench's tables
//! (`target/shmproc-bench/mpmc_scaling.txt`), so that the run ends with all.

use std::fmt::Write as _;

use shmproc_benches::{mean_ns, report_dir};

struct Row {
    what: &'static str,
    ours: Option<f64>,
    baseline_name: &'static str,
    baseline: Option<f64>,
}

fn main() {
    let c = |g: &str, b: &str| mean_ns(g, b);
    let py: Option<serde_json::Value> =
        std::fs::read_to_string(report_dir().join("python.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let pyv = |k: &str| py.as_ref().and_then(|v| v.get(k)).and_then(serde_json::Value::as_f64);
    let rows = vec![
        Row {
            what: "SPSC Queue<u64> per message",
            ours: c("spsc_u64", "shmproc_queue"),
            baseline_name: "pipe queue",
            baseline: c("spsc_u64", "pipe_queue"),
        },
        Row {
            what: "SPSC Queue<u64> per message",
            ours: c("spsc_u64", "shmproc_queue"),
            baseline_name: "unix-socket queue",
            baseline: c("spsc_u64", "unix_socket_queue"),
        },
        Row {
            what: "SPSC Queue<u64>, slot ring",
            ours: c("spsc_u64", "shmproc_slot_queue"),
            baseline_name: "pipe queue",
            baseline: c("spsc_u64", "pipe_queue"),
        },
        Row {
            what: "SPSC u64 via Pipe (byte ring)",
            ours: c("spsc_u64", "shmproc_pipe"),
            baseline_name: "pipe queue",
            baseline: c("spsc_u64", "pipe_queue"),
        },
        Row {
            what: "SPSC 1 KiB via Pipe",
            ours: c("spsc_1KiB", "shmproc_pipe"),
            baseline_name: "pipe queue",
            baseline: c("spsc_1KiB", "pipe_queue"),
        },
        Row {
            what: "SPSC 64 B per message",
            ours: c("spsc_64B", "shmproc_queue"),
            baseline_name: "pipe queue",
            baseline: c("spsc_64B", "pipe_queue"),
        },
        Row {
            what: "SPSC 1 KiB per message",
            ours: c("spsc_1KiB", "shmproc_queue"),
            baseline_name: "pipe queue",
            baseline: c("spsc_1KiB", "pipe_queue"),
        },
        Row {
            what: "SPSC 1 KiB per message",
            ours: c("spsc_1KiB", "shmproc_queue"),
            baseline_name: "unix-socket queue",
            baseline: c("spsc_1KiB", "unix_socket_queue"),
        },
        Row {
            what: "SPSC 64 KiB per message",
            ours: c("spsc_64KiB", "shmproc_queue"),
            baseline_name: "pipe queue",
            baseline: c("spsc_64KiB", "pipe_queue"),
        },
        Row {
            what: "SPSC 4 MiB per message",
            ours: c("spsc_4MiB", "shmproc_queue"),
            baseline_name: "pipe queue",
            baseline: c("spsc_4MiB", "pipe_queue"),
        },
        Row {
            what: "MPMC 2P/2C u64 per message",
            ours: c("mpmc_2p2c_u64", "shmproc_queue"),
            baseline_name: "pipe queue",
            baseline: c("mpmc_2p2c_u64", "pipe_queue"),
        },
        Row {
            what: "one-way latency, blocking",
            ours: c("one_way_latency", "shmproc_queue_blocking"),
            baseline_name: "pipe",
            baseline: c("one_way_latency", "pipe"),
        },
        Row {
            what: "one-way latency, spinning",
            ours: c("one_way_latency", "shmproc_queue_spinning"),
            baseline_name: "pipe",
            baseline: c("one_way_latency", "pipe"),
        },
        Row {
            what: "one-way latency, spinning, slot ring",
            ours: c("one_way_latency", "shmproc_slot_queue_spinning"),
            baseline_name: "pipe",
            baseline: c("one_way_latency", "pipe"),
        },
        Row {
            what: "one-way latency, blocking",
            ours: c("one_way_latency", "shmproc_queue_blocking"),
            baseline_name: "unix socket",
            baseline: c("one_way_latency", "unix_socket"),
        },
        Row {
            what: "lock+unlock, uncontended",
            ours: c("uncontended_lock_unlock", "shmproc_mutex"),
            baseline_name: "parking_lot",
            baseline: c("uncontended_lock_unlock", "parking_lot_mutex"),
        },
        Row {
            what: "two-process hand-off",
            ours: c("two_process_handoff", "shmproc_semaphore"),
            baseline_name: "pipe token",
            baseline: c("two_process_handoff", "pipe_token"),
        },
        Row {
            what: "Pool apply_async round trip",
            ours: c("pool_apply_async", "shmproc_pool"),
            baseline_name: "pipe pool",
            baseline: c("pool_apply_async", "pipe_pool"),
        },
        Row {
            what: "Pool apply_async round trip",
            ours: c("pool_apply_async", "shmproc_pool"),
            baseline_name: "CPython Pool",
            baseline: pyv("apply_async_ns"),
        },
        Row {
            what: "Pool map, per item",
            ours: c("pool_map_item", "shmproc_pool"),
            baseline_name: "CPython Pool",
            baseline: pyv("map_item_ns"),
        },
        Row {
            what: "Process start+join (fork)",
            ours: c("process_start_join", "shmproc_fork"),
            baseline_name: "CPython Process",
            baseline: pyv("process_start_join_ns"),
        },
    ];

    println!("\n== shmproc bench report (means; the ratio is baseline / shmproc: >1 means shmproc is faster) ==");
    println!("{:<30} {:>14} {:<18} {:>14} {:>9}", "measurement", "shmproc", "baseline", "baseline", "ratio");
    let mut csv = String::from("measurement,shmproc_ns,baseline,baseline_ns,ratio\n");
    let mut measured = Vec::new();
    for r in &rows {
        match (r.ours, r.baseline) {
            (Some(a), Some(b)) => {
                println!("{:<30} {:>11.1} ns {:<18} {:>11.1} ns {:>8.2}x", r.what, a, r.baseline_name, b, b / a);
                let _ = writeln!(csv, "{},{a:.1},{},{b:.1},{:.3}", r.what, r.baseline_name, b / a);
                measured.push((format!("{} vs {}", r.what, r.baseline_name), b / a));
            }
            _ => {
                println!("{:<30} {:>14} {:<18} (not measured in this run)", r.what, "-", r.baseline_name);
                let _ = writeln!(csv, "{},,{},,", r.what, r.baseline_name);
            }
        }
    }
    let dir = report_dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return;
    }
    let csv_path = dir.join("report.csv");
    let svg_path = dir.join("report.svg");
    if std::fs::write(&csv_path, csv).is_ok() && std::fs::write(&svg_path, svg(&measured)).is_ok() {
        println!("\nwrote {} and {}", csv_path.display(), svg_path.display());
    }
    let peers_path = dir.join("peers.txt");
    match std::fs::read_to_string(&peers_path) {
        Ok(peers) => {
            print!("{peers}");
            let age = std::fs::metadata(&peers_path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if let Some(age) = age {
                println!("(read from {}, written {} s ago)", peers_path.display(), age.as_secs());
            }
        }
        Err(_) => println!("\n(no peers table: run `cargo bench -p shmproc-benches --bench peers`)"),
    }
    let scaling_path = dir.join("mpmc_scaling.txt");
    match std::fs::read_to_string(&scaling_path) {
        Ok(t) => {
            print!("{t}");
            println!("(read from {})", scaling_path.display());
        }
        Err(_) => println!("\n(no scaling tables: run `cargo bench -p shmproc-benches --bench mpmc_scaling`)"),
    }
}

/// A horizontal bar chart of the ratios on a log scale, 1x marked.
fn svg(rows: &[(String, f64)]) -> String {
    let (w, left, bar_h, gap) = (900.0, 380.0, 22.0, 8.0);
    let h = 60.0 + rows.len() as f64 * (bar_h + gap);
    let max = rows.iter().map(|r| r.1).fold(1.0f64, f64::max).max(2.0);
    let min = rows.iter().map(|r| r.1).fold(1.0f64, f64::min).min(0.5);
    let (lmin, lmax) = (min.log10(), max.log10());
    let x = |v: f64| left + (v.log10() - lmin) / (lmax - lmin) * (w - left - 40.0);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='10' y='20' font-size='15'>shmproc vs baselines: speed-up (baseline time / shmproc time, log scale)</text>\n"
    );
    let one = x(1.0);
    for (i, (label, ratio)) in rows.iter().enumerate() {
        let y = 40.0 + i as f64 * (bar_h + gap);
        let (x0, x1) = if *ratio >= 1.0 { (one, x(*ratio)) } else { (x(*ratio), one) };
        let color = if *ratio >= 1.0 { "#2a7" } else { "#c44" };
        let _ = write!(
            s,
            "<text x='{}' y='{}' text-anchor='end'>{}</text>\n<rect x='{x0:.1}' y='{y:.1}' width='{:.1}' height='{bar_h}' fill='{color}'/>\n<text x='{:.1}' y='{}'>{ratio:.2}x</text>\n",
            left - 8.0,
            y + 15.0,
            label.replace('&', "&amp;").replace('<', "&lt;"),
            (x1 - x0).max(1.0),
            x1.max(one) + 4.0,
            y + 15.0
        );
    }
    let _ = write!(s, "<line x1='{one:.1}' y1='32' x2='{one:.1}' y2='{}' stroke='black'/>\n<text x='{one:.1}' y='{}' text-anchor='middle'>1x</text>\n</svg>\n", h - 12.0, h - 2.0);
    s
}
