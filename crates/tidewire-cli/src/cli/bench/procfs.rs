//! Samples a server process (and its children) from `/proc`: CPU time and resident
//! memory, so the benchmark reports what the server spent, not what the load
//! generator saw.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;

/// Clock ticks per second of `/proc/*/stat` times. Linux has used 100 on every
/// common architecture for decades (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU and memory of a process tree at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User plus system CPU seconds since the processes started.
    pub cpu_seconds: f64,
    /// Resident memory, in KiB.
    pub rss_kib: u64,
}

/// The process `pid` and every descendant.
pub fn sample(pid: u32) -> Option<Sample> {
    let tree = descendants(pid);
    let mut total = Sample::default();
    let mut found = false;
    for pid in tree {
        if let Some(one) = sample_one(pid) {
            found = true;
            total.cpu_seconds += one.cpu_seconds;
            total.rss_kib += one.rss_kib;
        }
    }
    found.then_some(total)
}

/// This process.
pub fn sample_self() -> Option<Sample> {
    sample_one(std::process::id())
}

fn sample_one(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    Some(Sample {
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        rss_kib,
    })
}

/// `pid` and all its descendants, found through the parent ids in `/proc/*/stat`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok());
            if let Some(parent) = parent {
                children.entry(parent).or_default().push(child);
            }
        }
    }
    let mut tree = vec![pid];
    let mut next = 0;
    while next < tree.len() {
        if let Some(kids) = children.get(&tree[next]) {
            tree.extend(kids);
        }
        next += 1;
    }
    tree
}

/// A background sampler: the peak resident memory seen while it ran.
pub struct Sampler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Sampler {
    /// Samples `pid` every `every` until [`Sampler::stop`].
    pub fn start(pid: u32, every: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                if let Some(sample) = tokio::task::spawn_blocking(move || sample(pid))
                    .await
                    .ok()
                    .flatten()
                {
                    peak = peak.max(sample.rss_kib);
                }
                tokio::select! {
                    _ = stopped.changed() => return peak,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
        Self { stop, task }
    }

    /// Stops and returns the peak resident memory in KiB.
    pub async fn stop(self) -> u64 {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or(0)
    }
}
