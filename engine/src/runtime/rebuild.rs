//! Blue-green rebuilds: a view whose `version:` changed (or `--rebuild VIEW`) is built
//! again from the start of the input, beside the old version, which keeps ingesting and
//! serving; when the new one has caught up, the name switches to it.
//!
//! ```text
//!  plan: the checkpoints' logic and pipeline text ─▶ which views are rebuilt
//!  catching up:  old pipeline (as the checkpoints ran it)  ─▶ accounts, ...
//!                rebuild pipeline (the new views only, own  ─▶ accounts__v2
//!                state in <state_dir>/rebuild, from offset 0)
//!  switch: both stop reading; both read on to the same offsets (the further of the
//!          two) and checkpoint there; each unit's new checkpoint is written from the
//!          old state (unchanged views) and the rebuilt one ([`merge`]); the new
//!          pipeline starts from it, and SQL moves to it at once
//! ```
//!
//! Every step is a checkpoint: killed while catching up, both pipelines resume from
//! their own; killed during the switch, the units not yet written are written at the
//! next start (the plan finds both at the same offsets).

use crate::config::{Logic, PipelineConfig};
use crate::runtime::pipeline::{RunOptions, projection_of};
use crate::state::checkpoint::recovery::{Checkpoints, stored_manifests};
use crate::state::units::Units;
use crate::{Error, Result};
use projector_connectors::SourceConfig;
use projector_operators::codec;
use projector_operators::projection::PartitionState;
use std::collections::BTreeMap;

use std::sync::Arc;

/// The directory, in the state directory, where the rebuilt views keep their state.
const REBUILD_DIR: &str = "rebuild";

/// A rebuild to run before the pipeline itself.
#[derive(Debug)]
pub struct RebuildPlan {
    /// The pipeline as its checkpoints ran it (the old versions), with this run's
    /// settings that do not shape state (source connection, workers, checkpoints,
    /// auth, dead letters).
    pub old: PipelineConfig,
    /// The new versions of the rebuilt views alone, each named as it is while it is
    /// rebuilt, with their own state (reading the input from its start).
    pub rebuilt: PipelineConfig,
    /// The options `rebuilt` runs with.
    pub rebuilt_options: RunOptions,
    /// Each rebuilt view: (its name, its name while rebuilt).
    pub views: Vec<(String, String)>,
    /// Only the switch is left to do: an earlier run stopped half way through it.
    pub switch_only: bool,
    /// Names this rebuild (the old logic and the rebuilt views'): the switch writes it
    /// in each unit's new checkpoint, so an interrupted switch knows what it wrote.
    pub id: String,
}

/// Why a rebuild cannot go ahead.
fn refused(message: String) -> Error {
    Error::Io {
        context: "planning the rebuild".into(),
        source: std::io::Error::other(message),
    }
}

/// What `new` (the pipeline file) needs before it runs on `options.state_dir`: `None`
/// when no view is rebuilt (no checkpoint, nothing changed, or only changes a restore
/// refuses or accepts as usual). `forced`: views to rebuild although unchanged
/// (`--rebuild`).
pub fn plan(
    new: &PipelineConfig,
    options: &RunOptions,
    forced: &[String],
) -> Result<Option<RebuildPlan>> {
    for f in forced {
        if !new.views.iter().any(|v| &v.name == f) {
            return Err(refused(format!(
                "--rebuild {f}: the pipeline has no view named '{f}'"
            )));
        }
    }
    if matches!(&new.source, SourceConfig::File(f) if f.is_stdin()) {
        return Ok(None); // no checkpoints
    }
    let manifests = match stored_manifests(&new.checkpoint, &options.state_dir) {
        Ok(m) => m,
        // The store away: the restore retries it, and compares the logic then (a
        // changed view is refused rather than rebuilt).
        Err(e) if forced.is_empty() => {
            eprintln!(
                "{}: warning: cannot look for views to rebuild: {e}",
                new.name
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // Per distinct stored logic: its text, and how many units have it.
    let mut stored: Vec<(Logic, Option<String>)> = Vec::new();
    for (_, manifest) in &manifests {
        let Some(m) = manifest else { continue };
        let Some(logic) = m.extra.get("logic").and_then(Logic::from_json) else {
            continue;
        };
        if !stored.iter().any(|(l, _)| *l == logic) {
            let text = m
                .extra
                .get("definition")
                .and_then(|d| d.as_str())
                .map(str::to_string);
            stored.push((logic, text));
        }
    }
    let (old_logic, old_text, switch_only) = match &stored[..] {
        [] => return Ok(None),
        [(l, t)] => (l.clone(), t.clone(), false),
        // A switch stopped half way: some units have the new logic already.
        [a, b] if a.0.views == new.logic.views || b.0.views == new.logic.views => {
            let (l, t) = if a.0.views == new.logic.views { b } else { a };
            (l.clone(), t.clone(), true)
        }
        _ => {
            return Err(refused(
                "the units' checkpoints were written by different versions of the pipeline, \
                 none of them this one (a switch was interrupted, then the pipeline changed \
                 again): run the pipeline of the interrupted switch once, or rebuild the \
                 views on an empty state"
                    .into(),
            ));
        }
    };
    // Which views are rebuilt, and which changed without a new version.
    let mut rebuilt = Vec::new();
    let mut unversioned = Vec::new();
    for view in &new.views {
        let now = new.logic.views.get(&view.name);
        let before = old_logic.views.get(&view.name);
        let version = new.logic.version_of(&view.name);
        let changed = now != before;
        if forced.contains(&view.name)
            || (changed && (before.is_none() || version != old_logic.version_of(&view.name)))
        {
            let shown = match (&version, forced.contains(&view.name) && !changed) {
                (_, true) => format!("{}__rebuild", view.name),
                (Some(v), false) => format!("{}__v{v}", view.name),
                (None, false) => format!("{}__new", view.name),
            };
            rebuilt.push((view.name.clone(), shown));
        } else if changed && !options.accept_logic_change.contains(&view.name) {
            unversioned.push(view.name.clone());
        }
    }
    if rebuilt.is_empty() {
        // A rebuild no longer asked for (the versions were put back), or whose switch
        // was written whole: its leftovers go.
        tidy(&options.state_dir.join(REBUILD_DIR), options, &new.name)?;
        return Ok(None);
    }
    if !unversioned.is_empty() {
        return Err(refused(format!(
            "view(s) {} changed without a new version while others are rebuilt: give each \
             a new `version:` (it is rebuilt beside the old one), or run the pipeline as it \
             was",
            unversioned.join(", ")
        )));
    }
    for (_, shown) in &rebuilt {
        if new.views.iter().any(|v| &v.name == shown) {
            return Err(refused(format!(
                "a view is rebuilt as '{shown}', which is the name of another view: rename it"
            )));
        }
    }
    if !switch_only && !options.accept_incomplete_rebuild {
        check_retained(new)?;
    }
    let Some(old_text) = old_text else {
        return Err(refused(
            "the checkpoints do not record the pipeline that wrote them (they are older than \
             versioned views): run the pipeline as it was once (its checkpoints then record \
             it), or rebuild the views on an empty state"
                .into(),
        ));
    };
    let mut old = crate::config::load_str(&old_text, &new.file).map_err(|e| {
        refused(format!(
            "the pipeline the checkpoints were written by does not load any more: {e}"
        ))
    })?;
    if old.logic.views != old_logic.views {
        return Err(refused(
            "the pipeline the checkpoints were written by compiles to other logic now (an \
             environment variable changed?): run it as it was, or rebuild on an empty state"
                .into(),
        ));
    }
    // What does not shape state comes from this run's file.
    match (&mut old.source, &new.source) {
        (SourceConfig::Kafka(o), SourceConfig::Kafka(n)) => {
            o.brokers.clone_from(&n.brokers);
            o.properties.clone_from(&n.properties);
            o.group_id.clone_from(&n.group_id);
            o.stop_at_end = n.stop_at_end;
        }
        (o, n) => *o = n.clone(),
    }
    old.workers = new.workers;
    old.publish_interval = new.publish_interval;
    old.checkpoint = new.checkpoint.clone();
    old.dead_letter = new.dead_letter.clone();
    old.auth = new.auth.clone();
    old.on_error = new.on_error;
    old.max_held = new.max_held;
    let mut side = new.clone();
    side.name = format!("{}-rebuild", new.name);
    side.views = new
        .views
        .iter()
        .filter_map(|v| {
            let (_, shown) = rebuilt.iter().find(|(n, _)| *n == v.name)?;
            let mut v = v.clone();
            v.name = shown.clone();
            Some(v)
        })
        .collect();
    side.logic.views = rebuilt
        .iter()
        .filter_map(|(name, shown)| Some((shown.clone(), new.logic.views.get(name)?.clone())))
        .collect();
    // Its own state, here; its bad records go to its own dead-letter file (the old
    // pipeline dead-letters them already); from the start of the input.
    side.checkpoint.store = None;
    side.dead_letter = None;
    side.auth = None;
    // Parked keys of the rebuilt views could not be retried (SQL and /parked answer
    // for the old pipeline meanwhile), and their held events would be applied to the
    // unchanged views again after the switch: the rebuild dead-letters instead.
    if side.on_error == crate::config::OnError::Park {
        side.on_error = crate::config::OnError::DeadLetter;
    }
    if let SourceConfig::Kafka(k) = &mut side.source {
        k.group_id = format!("{}-rebuild", k.group_id);
        k.start_from = projector_connectors::kafka::StartFrom::Earliest;
        // Where the rebuild ends is the running version's end (see the switch), not
        // the end the topic has when the rebuild starts.
        k.stop_at_end = false;
    }
    let mut side_options = RunOptions::resolve(&side, Some(options.state_dir.join(REBUILD_DIR)));
    side_options.workers = options.workers;
    // A rebuild of other views, or of other versions, starts over.
    let side_dir = &side_options.state_dir;
    if let Ok(found) = stored_manifests(&side.checkpoint, side_dir) {
        let other = found.iter().any(|(_, m)| {
            m.as_ref()
                .and_then(|m| m.extra.get("logic"))
                .and_then(Logic::from_json)
                .is_some_and(|l| l.views != side.logic.views)
        });
        if other && !switch_only {
            eprintln!(
                "{}: the rebuild in {} was of other views or versions: starting it over",
                new.name,
                side_dir.display()
            );
            std::fs::remove_dir_all(side_dir).map_err(|e| Error::Io {
                context: format!("removing {}", side_dir.display()),
                source: e,
            })?;
        }
    }
    let id = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(old_logic.to_json().to_string());
        h.update(side.logic.to_json().to_string());
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    Ok(Some(RebuildPlan {
        old,
        rebuilt: side,
        rebuilt_options: side_options,
        views: rebuilt,
        switch_only,
        id,
    }))
}

/// Removes a rebuild's state `dir`, keeping the records it dead-lettered (the ones the
/// new versions could not apply) beside the pipeline's own letters.
fn tidy(dir: &std::path::Path, options: &RunOptions, name: &str) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let letters = dir.join("dead-letters.ndjson");
    if std::fs::metadata(&letters).is_ok_and(|m| m.len() > 0) {
        let kept = options.state_dir.join(format!(
            "dead-letters.rebuild-{}.ndjson",
            crate::state::checkpoint::recovery::now_ms()
        ));
        std::fs::rename(&letters, &kept).map_err(|e| Error::Io {
            context: format!("keeping {}", letters.display()),
            source: e,
        })?;
        eprintln!(
            "{name}: the records the rebuilt views could not apply are in {}",
            kept.display()
        );
    }
    std::fs::remove_dir_all(dir).map_err(|e| Error::Io {
        context: format!("removing the rebuilt views' state {}", dir.display()),
        source: e,
    })
}

/// Refuses a rebuild from input whose oldest records are gone (Kafka retention, or a
/// deletion): the rebuilt views would miss them, unlike the old ones.
fn check_retained(config: &PipelineConfig) -> Result<()> {
    #[cfg(feature = "kafka")]
    if let SourceConfig::Kafka(k) = &config.source {
        let lows =
            projector_connectors::kafka::low_watermarks(&k.brokers, &k.properties, &k.topics)
                .map_err(Error::Source)?;
        if let Some(why) = lost_input(&lows) {
            return Err(refused(why));
        }
    }
    let _ = config;
    Ok(())
}

/// Why a rebuild from partitions whose first offsets are `lows` (name, offset) would
/// miss records, if it would.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
fn lost_input(lows: &[(String, i64)]) -> Option<String> {
    let lost: Vec<String> = lows
        .iter()
        .filter(|(_, low)| *low > 0)
        .map(|(p, low)| format!("{p} starts at offset {low}"))
        .collect();
    (!lost.is_empty()).then(|| {
        format!(
            "a rebuild reads the input from its start, which is no longer there: {} \
             (retention or a deletion dropped the records before). The rebuilt views would \
             miss them. Rebuild from a full copy of the input, or accept views built from \
             what is left with --accept-incomplete-rebuild",
            lost.join(", ")
        )
    })
}

/// The switch: writes every unit's first checkpoint of `new` from the old pipeline's
/// checkpoint and the rebuild's, which must be at the same offsets, and removes the
/// rebuild's state.
pub fn merge(plan: &RebuildPlan, new: &PipelineConfig, options: &RunOptions) -> Result<()> {
    let partitions = projector_connectors::open(&new.source, &projector_connectors::Resume::new())
        .map_err(Error::Source)?
        .partitions();
    let units = &Arc::new(Units::new(&partitions));
    let old_projection = projection_of(&plan.old);
    let side_projection = projection_of(&plan.rebuilt);
    let new_projection = projection_of(new);
    let main = Checkpoints::open(
        &plan.old.checkpoint,
        &options.state_dir,
        units.clone(),
        false,
        plan.old.logic.clone(),
        plan.old.text.clone(),
    )?;
    let side = Checkpoints::open(
        &plan.rebuilt.checkpoint,
        &plan.rebuilt_options.state_dir,
        units.clone(),
        false,
        plan.rebuilt.logic.clone(),
        plan.rebuilt.text.clone(),
    )?;
    // Per unit: it has a checkpoint, and the rebuild it was switched by, if any.
    let stored: BTreeMap<String, Option<String>> =
        stored_manifests(&new.checkpoint, &options.state_dir)?
            .into_iter()
            .filter_map(|(unit, m)| {
                let m = m?;
                let switched = m.extra.get("switched").and_then(|s| s.as_str());
                Some((unit, switched.map(str::to_string)))
            })
            .collect();
    let rebuilt: Vec<&str> = plan.views.iter().map(|(n, _)| n.as_str()).collect();
    let whole = rebuilt.len() == new.views.len();
    for id in 0..units.names().len() as u32 {
        let name = units.name(id);
        match stored.get(name) {
            // Written by an earlier, interrupted switch of this rebuild.
            Some(Some(id)) if *id == plan.id => continue,
            // No checkpoint: the new pipeline starts it from the beginning.
            None => continue,
            Some(_) => {}
        }
        let old = main.restore(id, &old_projection, 1, |_| 0)?;
        let built = side.restore(id, &side_projection, 1, |_| 0)?;
        let (Some(at), Some(side_at)) = (&old.resume, &built.resume) else {
            return Err(refused(format!(
                "{name}: the rebuild has no checkpoint to switch to"
            )));
        };
        if at != side_at {
            return Err(refused(format!(
                "{name}: the old views are at {at:?} and the rebuilt ones at {side_at:?}: \
                 the switch needs both at the same offsets"
            )));
        }
        let mut old_state = old.workers.into_iter().next().expect("one worker");
        let mut side_state = built.workers.into_iter().next().expect("one worker");
        let mut state = new_projection.new_partition_state();
        // The version guard and ids: the rebuild's when every view is rebuilt (the
        // envelope may have changed), else the old pipeline's (the same events, read
        // the same way).
        let guard: &mut PartitionState = if whole {
            &mut side_state
        } else {
            &mut old_state
        };
        state.versions = std::mem::take(&mut guard.versions);
        state.stream_versions = std::mem::take(&mut guard.stream_versions);
        state.dedup = std::mem::take(&mut guard.dedup);
        state.parked = std::mem::take(&mut old_state.parked);
        state.redriven = std::mem::take(&mut old_state.redriven);
        for (i, view) in new.views.iter().enumerate() {
            let from = match plan.views.iter().find(|(n, _)| *n == view.name) {
                Some((_, shown)) => plan
                    .rebuilt
                    .views
                    .iter()
                    .position(|v| v.name == *shown)
                    .map(|j| std::mem::replace(&mut side_state.views[j], state.views[i].clone())),
                None => plan
                    .old
                    .views
                    .iter()
                    .position(|v| v.name == view.name)
                    .map(|j| std::mem::replace(&mut old_state.views[j], state.views[i].clone())),
            };
            if let Some(v) = from {
                state.views[i] = v;
            }
        }
        let mut piece = Vec::new();
        codec::encode(&new_projection, &state, &mut piece);
        let mut file = Vec::with_capacity(piece.len() + 8);
        file.extend_from_slice(&(piece.len() as u64).to_le_bytes());
        file.extend_from_slice(&piece);
        let epoch = old.epoch.max(built.epoch).max(old.epoch_floor) + 1;
        main.rewrite(
            id,
            epoch,
            &new.name,
            at,
            &file,
            (&new.logic, &new.text),
            &plan.id,
        )?;
    }
    drop(side);
    tidy(&plan.rebuilt_options.state_dir, options, &new.name)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::lost_input;

    #[test]
    fn a_partition_that_lost_its_first_records_refuses_the_rebuild() {
        let all = [("t/0".to_string(), 0), ("t/1".to_string(), 0)];
        assert_eq!(lost_input(&all), None);
        let lost = [("t/0".to_string(), 0), ("t/1".to_string(), 1234)];
        let why = lost_input(&lost).expect("refused");
        assert!(why.contains("t/1 starts at offset 1234"), "{why}");
        assert!(!why.contains("t/0"), "{why}");
        assert!(why.contains("--accept-incomplete-rebuild"), "{why}");
    }
}
