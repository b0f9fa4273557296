//! `dedup:`: events that carry an id but no version, re-sent (also across a restart),
//! are applied once.

mod common;

use common::cluster::{Running, free_port, get_json, run_once, wait_for};
use common::{Rng, assert_rows, file_pipeline, generator_records, oracle, replace_line, summary};
use std::path::Path;

/// The bank pipeline on `events`, its envelope without a version, deduplicating by id.
fn pipeline(dir: &Path, events: &Path, dedup: bool) -> std::path::PathBuf {
    let mut text = file_pipeline(events.to_str().expect("utf-8"), "dead_letter");
    text = replace_line(&text, "  version:", "");
    if dedup {
        text = text.replacen("views:", "dedup: { by: id, window: 1000 }\nviews:", 1);
    }
    let path = dir.join(if dedup { "dedup.yaml" } else { "plain.yaml" });
    std::fs::write(&path, text).expect("write pipeline");
    path
}

fn append(path: &Path, records: &[&Vec<u8>]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("events file");
    for r in records {
        f.write_all(r).expect("write");
        f.write_all(b"\n").expect("write");
    }
}

#[test]
fn repeats_of_an_id_are_applied_once_also_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unique = generator_records(20_000, 400, 31);
    let events = dir.path().join("events.ndjson");
    // Half the events with repeats among them, then (after a restart) the other half
    // with repeats of both halves: an at-least-once producer that resends after its
    // own restart.
    let mut rng = Rng(0xdeed);
    let half = unique.len() / 2;
    let mut repeats = 0;
    let mut first = Vec::new();
    for (i, (_, raw)) in unique[..half].iter().enumerate() {
        first.push(raw);
        if rng.below(10) == 0 {
            first.push(&unique[rng.below(i as u64 + 1) as usize].1);
            repeats += 1;
        }
    }
    append(&events, &first);
    let with = pipeline(dir.path(), &events, true);
    let state = dir.path().join("state");
    let (stderr, _, _) = run_once(&with, &state);
    let first_dups = summary(&stderr).duplicates;
    assert_eq!(first_dups, repeats, "{stderr}");

    let mut second = Vec::new();
    for (i, (_, raw)) in unique[half..].iter().enumerate() {
        second.push(raw);
        if rng.below(10) == 0 {
            second.push(&unique[rng.below((half + i + 1) as u64) as usize].1);
            repeats += 1;
        }
    }
    append(&events, &second);
    let (stderr, accounts, volume) = run_once(&with, &state);
    assert_eq!(
        summary(&stderr).duplicates + first_dups,
        repeats,
        "{stderr}"
    );
    let exp = oracle::expected(&unique);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());

    // Without dedup, the repeats count twice.
    let plain = pipeline(dir.path(), &events, false);
    let (_, accounts, _) = run_once(&plain, &dir.path().join("state-plain"));
    assert_ne!(accounts, exp.accounts_json());

    // /status reports what the ids take, bounded by the window.
    let port = free_port();
    let _running = Running::start(&with, &dir.path().join("state-live"), port, 1);
    let total = (unique.len() as u64) + repeats;
    let mut ids = 0;
    let reported = wait_for(30, || {
        let Some(s) = get_json(port, "/status") else {
            return false;
        };
        ids = s["dedup"]["ids"].as_u64().unwrap_or(0);
        s["events"]["read"].as_u64() == Some(total) && ids > 0
    });
    assert!(reported, "dedup ids in /status ({ids})");
    assert!(ids <= unique.len() as u64, "{ids}");
}
