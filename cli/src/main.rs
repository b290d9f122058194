//! `shmproc`: list, inspect, remove and clean the named shared-memory
//! segments of shmproc programs.
//!
//! ```text
//! shmproc list              # name, size, owner, creator pid, alive?
//! shmproc inspect NAME      # every object: queue depth, lock owner, ...
//! shmproc remove NAME       # unlink one segment
//! shmproc clean             # unlink every segment whose creator is dead
//!                           # (also one it left half-created)
//! ```
//!
//! Other users' segments are listed but never opened or removed; a segment
//! that fails validation is reported as corrupt (exit status 1).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shmproc::inspect::ObjectState;
use shmproc::segment::{SegmentError, SegmentStatus};
use shmproc::Segment;

#[derive(Parser)]
#[command(name = "shmproc", version, about = "Inspect and clean up shmproc shared-memory segments")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List named segments with owner, size, creator and whether it is alive.
    List,
    /// Show every object in a segment.
    Inspect {
        /// Segment name (as given to `Segment::create_named`).
        name: String,
    },
    /// Remove a named segment (processes that mapped it keep their mapping).
    Remove {
        /// Segment name.
        name: String,
    },
    /// Remove every segment of ours whose creator is dead (also segments it
    /// left half-created).
    Clean,
}

fn list() -> Result<(), SegmentError> {
    let segs = Segment::list()?;
    if segs.is_empty() {
        println!("no shmproc segments");
        return Ok(());
    }
    println!("{:<32} {:>10} {:>6} {:>8} {:<8} {:>7}  status", "NAME", "SIZE", "UID", "CREATOR", "ALIVE", "OBJECTS");
    for s in segs {
        match &s.status {
            SegmentStatus::Valid { creator, creator_alive, objects } => println!(
                "{:<32} {:>10} {:>6} {:>8} {:<8} {:>7}  {}",
                s.name,
                s.size,
                s.uid,
                creator.id,
                if *creator_alive { "yes" } else { "no" },
                objects,
                if *creator_alive { "ok" } else { "stale (creator dead)" }
            ),
            SegmentStatus::NotOwner => {
                println!(
                    "{:<32} {:>10} {:>6} {:>8} {:<8} {:>7}  other user's (not opened)",
                    s.name, s.size, s.uid, "-", "-", "-"
                )
            }
            SegmentStatus::NotReady { creator, abandoned } => {
                let pid = creator.map_or_else(|| "-".to_owned(), |c| c.id.to_string());
                let alive = match (creator, abandoned) {
                    (Some(_), false) => "yes",
                    (Some(_), true) => "no",
                    (None, _) => "-",
                };
                let what = if *abandoned { "stale (never initialised, creator gone)" } else { "not initialised yet" };
                println!("{:<32} {:>10} {:>6} {:>8} {:<8} {:>7}  {what}", s.name, s.size, s.uid, pid, alive, "-")
            }
            SegmentStatus::Corrupt(e) => {
                println!("{:<32} {:>10} {:>6} {:>8} {:<8} {:>7}  CORRUPT: {e}", s.name, s.size, s.uid, "-", "-", "-")
            }
        }
    }
    Ok(())
}

/// Printed under a queue's holders: what a forked child's "inherited,
/// unused" entry means.
const FORK_NOTE: &str = "note: a process holds the handles it made and, if forked, copies of every handle its parent \
                         held at the fork (listed as inherited, unused, until it sends, receives or makes a handle); \
                         they count for Disconnected until it drops them or exits";

fn inspect(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let seg = Segment::open_timeout(name, std::time::Duration::from_millis(500)).map_err(|e| match e {
        SegmentError::Region { source, .. } => format!("segment {name} is corrupt: {source}").into(),
        other => Box::<dyn std::error::Error>::from(other.to_string()),
    })?;
    let report = shmproc::inspect::inspect(&seg).map_err(|e| format!("segment {name} is corrupt: {e}"))?;
    let h = &report.header;
    println!("segment {name}: {} bytes, heap {}/{} used", h.total_size, h.heap_used, h.total_size - h.heap_start);
    println!(
        "creator pid {} ({}), uid {}, {} of {} directory slots",
        h.creator.id,
        if report.creator_alive { "alive" } else { "dead" },
        h.creator_uid,
        h.dir_len,
        h.dir_capacity
    );
    let (mut corrupt, mut holders) = (false, false);
    for o in &report.objects {
        corrupt |= matches!(o.state, ObjectState::Corrupt(_));
        holders |= matches!(&o.state, ObjectState::Queue { holders, .. } if !holders.is_empty());
        let name = if o.name.is_empty() { "(unnamed)" } else { &o.name };
        println!("  [{}] {:<12} {:<20} {}", o.index, o.kind, name, o.state);
    }
    if holders {
        // What the participants table can know: who holds handles, not who
        // uses them (shmproc::inspect's module docs).
        println!("{FORK_NOTE}");
    }
    if corrupt {
        return Err(format!("segment {name} has corrupt objects").into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::List => list().map_err(Into::into),
        Command::Inspect { name } => inspect(&name),
        Command::Remove { name } => Segment::remove(&name).map(|()| println!("removed {name}")).map_err(Into::into),
        Command::Clean => Segment::remove_stale()
            .map(|removed| {
                if removed.is_empty() {
                    println!("nothing to clean");
                }
                for n in removed {
                    println!("removed stale segment {n}");
                }
            })
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmproc: {e}");
            ExitCode::FAILURE
        }
    }
}
