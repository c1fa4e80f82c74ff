//! Renders the run's event stream: indicatif bars on a terminal, plain lines otherwise, or one
//! JSON object per event on stdout with `--json`. Progress never mixes with results on stdout.

use std::collections::HashMap;
use std::io::{BufWriter, Stderr, Stdout, Write};
use std::time::Duration;

use ablate_plan::PlanIndex;
use ablate_run::{RunEvent, Summary};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Json,
    Terminal,
    Plain,
}

/// Instance lines shown at once on a terminal; the rest are counted on the main bar.
const MAX_BARS: usize = 12;

/// A fused group shows each member's loss up to this many members, else their range.
const GROUP_LOSSES: usize = 4;

/// A member's latest progress: step, total, loss.
type Latest = (u64, u64, Option<f64>);

/// A fused group in flight: one line for its members (issue 23).
struct Group {
    stage: String,
    /// The members still running, each with its latest step, total and loss.
    members: Vec<(PlanIndex, Option<Latest>)>,
    /// Its latest message (waiting for a lock …).
    message: Option<String>,
    bar: Option<ProgressBar>,
    /// Quarter of the steps last logged (plain mode).
    logged: u64,
    /// The message last logged (plain mode): each member of a Slurm task says the same
    /// (`submitted as slurm task …`), and the group's line says it once.
    said: Option<String>,
}

impl Group {
    /// `resnet ×16`.
    fn prefix(&self) -> String {
        format!("{} ×{}", self.stage, self.members.len())
    }

    /// `120/300 loss 0.4100 … 0.6300`: the slowest member's step, and each member's latest
    /// loss when few, else their range.
    fn message(&self) -> String {
        let mut msg = group_progress(&self.members.iter().map(|(_, p)| *p).collect::<Vec<_>>());
        if let Some(m) = &self.message {
            if !msg.is_empty() {
                msg.push(' ');
            }
            msg.push_str(m);
        }
        msg
    }
}

/// The progress of a fused group's members (each one's latest step, total, loss; `None`:
/// none yet): the slowest step over the total, then the losses (each when at most
/// [`GROUP_LOSSES`], else `min … max`).
fn group_progress(members: &[Option<Latest>]) -> String {
    let seen: Vec<Latest> = members.iter().flatten().copied().collect();
    let mut msg = String::new();
    let total = seen.iter().map(|p| p.1).max().unwrap_or(0);
    if total > 0 {
        let step = seen.iter().map(|p| p.0).min().unwrap_or(0);
        msg.push_str(&format!("{step}/{total}"));
    }
    let mut losses: Vec<f64> = seen.iter().filter_map(|p| p.2).collect();
    if !losses.is_empty() {
        if !msg.is_empty() {
            msg.push(' ');
        }
        if losses.len() <= GROUP_LOSSES {
            let each: Vec<String> = losses.iter().map(|l| format!("{l:.4}")).collect();
            msg.push_str(&format!("loss {}", each.join(" ")));
        } else {
            losses.sort_by(f64::total_cmp);
            msg.push_str(&format!(
                "loss {:.4} … {:.4}",
                losses[0],
                losses[losses.len() - 1]
            ));
        }
    }
    msg
}

pub struct Reporter {
    mode: Mode,
    json: BufWriter<Stdout>,
    plain: BufWriter<Stderr>,
    multi: MultiProgress,
    main: Option<ProgressBar>,
    bars: HashMap<PlanIndex, ProgressBar>,
    /// Started instances beyond [`MAX_BARS`], in start order: they get a bar when one frees up
    /// (a Slurm run starts every ready instance at once).
    unshown: Vec<(PlanIndex, String)>,
    /// Quarter of the epochs last logged per instance (plain mode).
    logged: HashMap<PlanIndex, u64>,
    /// Fused groups in flight, by the order they started.
    groups: HashMap<usize, Group>,
    /// The group each running member belongs to.
    member_of: HashMap<PlanIndex, usize>,
    started_groups: usize,
    /// Cached instances not yet shown, grouped by stage (terminal mode).
    cached: Vec<(String, String)>,
    ran: usize,
    cached_n: usize,
    failed: usize,
}

impl Reporter {
    pub fn new(mode: Mode) -> Self {
        let multi = MultiProgress::with_draw_target(if mode == Mode::Terminal {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        });
        Reporter {
            mode,
            json: BufWriter::new(std::io::stdout()),
            plain: BufWriter::new(std::io::stderr()),
            multi,
            main: None,
            bars: HashMap::new(),
            unshown: Vec::new(),
            logged: HashMap::new(),
            groups: HashMap::new(),
            member_of: HashMap::new(),
            started_groups: 0,
            cached: Vec::new(),
            ran: 0,
            cached_n: 0,
            failed: 0,
        }
    }

    pub fn handle(&mut self, ev: &RunEvent) {
        match self.mode {
            Mode::Json => self.json_line(ev),
            Mode::Terminal => self.terminal(ev),
            Mode::Plain => self.plain_line(ev),
        }
    }

    fn json_line(&mut self, ev: &RunEvent) {
        let _ = serde_json::to_writer(&mut self.json, ev);
        let _ = self.json.write_all(b"\n");
        // Bursts (cache hits, progress) are buffered; anything a reader waits for is flushed.
        if !matches!(
            ev,
            RunEvent::Cached { .. } | RunEvent::Progress { message: None, .. }
        ) {
            let _ = self.json.flush();
        }
    }

    /// A fused group starts: its members share one line from now on.
    fn start_group(&mut self, stage: &str, members: &[PlanIndex]) -> usize {
        let g = self.started_groups;
        self.started_groups += 1;
        for m in members {
            self.member_of.insert(*m, g);
        }
        self.groups.insert(
            g,
            Group {
                stage: stage.to_owned(),
                members: members.iter().map(|m| (*m, None)).collect(),
                message: None,
                bar: None,
                logged: 0,
                said: None,
            },
        );
        g
    }

    /// A member's progress, into its group; the group, if it has one.
    fn group_progress(
        &mut self,
        instance: PlanIndex,
        step: u64,
        total: u64,
        loss: Option<f64>,
        message: &Option<String>,
    ) -> Option<&mut Group> {
        let g = self.groups.get_mut(self.member_of.get(&instance)?)?;
        if let Some((_, p)) = g.members.iter_mut().find(|(m, _)| *m == instance)
            && (total > 0 || loss.is_some())
        {
            *p = Some((step, total, loss));
        }
        if message.is_some() {
            g.message.clone_from(message);
        }
        Some(g)
    }

    /// A member ended (or left to be retried): it leaves its group's line, and a group with
    /// no member left is gone.
    fn leave_group(&mut self, instance: PlanIndex) {
        let Some(g) = self.member_of.remove(&instance) else {
            return;
        };
        let Some(group) = self.groups.get_mut(&g) else {
            return;
        };
        group.members.retain(|(m, _)| *m != instance);
        if let Some(bar) = &group.bar {
            bar.set_prefix(group.prefix());
            bar.set_message(group.message());
        }
        if group.members.is_empty()
            && let Some(group) = self.groups.remove(&g)
            && let Some(bar) = group.bar
        {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    fn println(&mut self, line: String) {
        match self.mode {
            Mode::Terminal => {
                let _ = self.multi.println(line);
            }
            _ => {
                let _ = writeln!(self.plain, "{line}");
            }
        }
    }

    fn plain_line(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::GroupStarted { members, stage, .. } => {
                self.start_group(stage, members);
                if let Some(line) = self.common_line(ev) {
                    let _ = writeln!(self.plain, "{line}");
                    let _ = self.plain.flush();
                }
            }
            RunEvent::Progress {
                instance,
                step,
                total,
                loss,
                message,
                ..
            } if self.member_of.contains_key(instance) => {
                // One line for the group, at each quarter of its slowest member's steps.
                let Some(g) = self.group_progress(*instance, *step, *total, *loss, message) else {
                    return;
                };
                let slowest = g.members.iter().filter_map(|(_, p)| *p).min_by_key(|p| p.0);
                let line = match (slowest, message) {
                    (_, Some(m)) if g.said.as_ref() == Some(m) => None,
                    (_, Some(m)) => {
                        g.said = Some(m.clone());
                        Some(m.clone())
                    }
                    (Some((step, total, _)), None) if total > 0 && step < total => {
                        let quarter = step * 4 / total;
                        (quarter > g.logged).then(|| {
                            g.logged = quarter;
                            g.message()
                        })
                    }
                    _ => None,
                };
                if let Some(line) = line {
                    let prefix = g.prefix();
                    let _ = writeln!(self.plain, "  ...     {prefix}  {line}");
                    let _ = self.plain.flush();
                }
            }
            RunEvent::Progress {
                instance,
                id,
                step,
                total,
                loss,
                ..
            } if *total > 0 => {
                let quarter = step * 4 / total;
                let last = self.logged.entry(*instance).or_insert(0);
                if quarter > *last && step < total {
                    *last = quarter;
                    let loss = loss.map(|l| format!(" loss {l:.4}")).unwrap_or_default();
                    let _ = writeln!(self.plain, "  ...     {id}  {step}/{total}{loss}");
                }
            }
            RunEvent::Progress {
                id,
                message: Some(m),
                ..
            } => {
                let _ = writeln!(self.plain, "  ...     {id}  {m}");
                let _ = self.plain.flush();
            }
            RunEvent::Progress { .. } => {}
            other => {
                if let RunEvent::Finished { instance, .. }
                | RunEvent::Failed { instance, .. }
                | RunEvent::Submitted { instance, .. }
                | RunEvent::Paused { instance, .. } = other
                {
                    self.leave_group(*instance);
                }
                if let Some(line) = self.common_line(other) {
                    let _ = writeln!(self.plain, "{line}");
                }
                if !matches!(other, RunEvent::Cached { .. }) {
                    let _ = self.plain.flush();
                }
            }
        }
    }

    /// Lines that both the terminal and plain modes print.
    fn common_line(&mut self, ev: &RunEvent) -> Option<String> {
        match ev {
            RunEvent::Plan {
                pipeline,
                instances,
                cached,
                to_run,
            } => Some(format!(
                "pipeline `{pipeline}`: {instances} instance{}, {cached} cached, {to_run} to run",
                plural(*instances)
            )),
            RunEvent::Cached {
                id,
                key,
                diverged,
                entry,
                ..
            } => {
                self.cached_n += 1;
                Some(format!(
                    "  cached  {}  {id}{}{}",
                    key.short(),
                    diverged_note(diverged),
                    pruned_note(entry.status())
                ))
            }
            RunEvent::GroupStarted { stage, ids, .. } => Some(format!(
                "  fused   {stage} ×{}: {} … {}",
                ids.len(),
                ids.first().map_or("", String::as_str),
                ids.last().map_or("", String::as_str)
            )),
            RunEvent::Started { id, attempt, .. } => Some(if *attempt > 1 {
                format!("  start   {id} (attempt {attempt})")
            } else {
                format!("  start   {id}")
            }),
            RunEvent::Finished {
                id,
                key,
                status,
                seconds,
                metrics,
                by_other,
                diverged,
                missing_inputs,
                ..
            } => {
                if *by_other {
                    self.cached_n += 1;
                } else {
                    self.ran += 1;
                }
                let shown: Vec<String> = metrics
                    .iter()
                    .take(4)
                    .map(|(k, v)| format!("{k}={}", ablate_results::format_metric(*v)))
                    .collect();
                let how = match (by_other, diverged) {
                    (true, _) => "cached by another run",
                    (false, Some(_)) => "diverged",
                    (false, None) if *status == "pruned" => "pruned",
                    (false, None) => "done",
                };
                let missing = match missing_inputs {
                    0 => String::new(),
                    n => format!(" (without {n} input{} that did not finish)", plural(*n)),
                };
                let how_diverged = diverged
                    .as_ref()
                    .map(|d| format!("  {}", divergence(d)))
                    .unwrap_or_default();
                let line = format!(
                    "  {how:<7} {}  {id}{missing}{how_diverged}  {seconds:.2}s  {}",
                    key.short(),
                    shown.join(" ")
                );
                Some(line.trim_end().to_owned())
            }
            RunEvent::Failed {
                id,
                key,
                error,
                log,
                will_retry,
                attempt,
                ..
            } => {
                let mut s = if *will_retry {
                    format!(
                        "  retry   {}  {id} (attempt {attempt} failed): {}",
                        key.short(),
                        first_line(error)
                    )
                } else {
                    self.failed += 1;
                    format!(
                        "  FAILED  {}  {id}\n{}",
                        key.short(),
                        indent(error, "          ")
                    )
                };
                if let Some(log) = log {
                    s.push_str(&format!("\n          logs: {}", log.display()));
                }
                Some(s)
            }
            RunEvent::Skipped {
                id,
                key,
                because,
                cause,
                ..
            } => Some(format!(
                "  skipped {}  {id} (needs `{because}`, which {})",
                key.short(),
                cause.name()
            )),
            RunEvent::Submitted { id, key, task, .. } => Some(format!(
                "  queued  {}  {id}  slurm task {task}",
                key.short()
            )),
            RunEvent::Paused {
                id,
                key,
                step,
                value,
                ..
            } => Some(format!(
                "  paused  {}  {id}  at {step}{}",
                key.short(),
                value
                    .map(|v| format!(" ({})", ablate_results::format_metric(v)))
                    .unwrap_or_default()
            )),
            RunEvent::Rung(r) => Some(rung_line(r)),
            RunEvent::Interrupted { not_run } => Some(format!(
                "interrupted: {not_run} instance{} not run; nothing half-written was kept",
                plural(*not_run)
            )),
            RunEvent::Summary(s) => Some(summary_line(s)),
            RunEvent::Progress { .. } => None,
        }
    }

    fn terminal(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::Plan { instances, .. } => {
                if let Some(line) = self.common_line(ev) {
                    self.println(line);
                }
                let bar = self.multi.add(ProgressBar::new(*instances as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed}, ETA {eta})",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                self.main = Some(bar);
            }
            RunEvent::Cached {
                id,
                diverged,
                entry,
                ..
            } => {
                let stage = id.split('[').next().unwrap_or(id).to_owned();
                let note = format!("{}{}", diverged_note(diverged), pruned_note(entry.status()));
                self.cached.push((stage, format!("{id}{note}")));
                self.cached_n += 1;
                self.advance();
            }
            RunEvent::GroupStarted { members, stage, .. } => {
                self.flush_cached();
                let g = self.start_group(stage, members);
                let bar = self.multi.insert_from_back(1, ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix} {msg}")
                        .expect("valid template"),
                );
                let group = self.groups.get_mut(&g).expect("just started");
                bar.set_prefix(group.prefix());
                bar.enable_steady_tick(Duration::from_millis(120));
                group.bar = Some(bar);
            }
            RunEvent::Progress {
                instance,
                step,
                total,
                loss,
                message,
                ..
            } if self.member_of.contains_key(instance) => {
                if let Some(g) = self.group_progress(*instance, *step, *total, *loss, message)
                    && let Some(bar) = &g.bar
                {
                    bar.set_message(g.message());
                }
            }
            RunEvent::Progress {
                instance,
                step,
                total,
                loss,
                message,
                ..
            } => {
                if let Some(bar) = self.bars.get(instance) {
                    let mut msg = if *total > 0 {
                        format!("{step}/{total}")
                    } else {
                        String::new()
                    };
                    if let Some(l) = loss {
                        msg.push_str(&format!(" loss {l:.4}"));
                    }
                    if let Some(m) = message {
                        if !msg.is_empty() {
                            msg.push(' ');
                        }
                        msg.push_str(m);
                    }
                    bar.set_message(msg);
                }
            }
            RunEvent::Started { instance, .. } if self.member_of.contains_key(instance) => {}
            RunEvent::Started { instance, id, .. } => {
                self.flush_cached();
                if self.bars.len() < MAX_BARS {
                    self.show(*instance, id.clone());
                } else {
                    self.unshown.push((*instance, id.clone()));
                    self.describe();
                }
            }
            RunEvent::Finished { instance, .. }
            | RunEvent::Failed { instance, .. }
            | RunEvent::Submitted { instance, .. }
            | RunEvent::Paused { instance, .. } => {
                let done = !matches!(
                    ev,
                    RunEvent::Failed {
                        will_retry: true,
                        ..
                    } | RunEvent::Paused { .. }
                );
                self.leave_group(*instance);
                if let Some(bar) = self.bars.remove(instance) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                    if !self.unshown.is_empty() {
                        let (next, id) = self.unshown.remove(0);
                        self.show(next, id);
                    }
                }
                self.unshown.retain(|(i, _)| i != instance);
                if let Some(line) = self.common_line(ev) {
                    self.println(line);
                }
                if done {
                    self.advance();
                }
            }
            RunEvent::Skipped { .. } => {
                if let Some(line) = self.common_line(ev) {
                    self.println(line);
                }
                self.advance();
            }
            RunEvent::Rung(_) => {
                if let Some(line) = self.common_line(ev) {
                    self.println(line);
                }
            }
            RunEvent::Interrupted { .. } | RunEvent::Summary(_) => {
                self.flush_cached();
                // Instances stopped by Ctrl-C (or left on Slurm) end without an event of their own.
                for (_, bar) in self.bars.drain() {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.member_of.clear();
                for (_, group) in self.groups.drain() {
                    if let Some(bar) = group.bar {
                        bar.finish_and_clear();
                        self.multi.remove(&bar);
                    }
                }
                self.unshown.clear();
                if let RunEvent::Summary(_) = ev
                    && let Some(bar) = self.main.take()
                {
                    bar.finish_and_clear();
                }
                if let Some(line) = self.common_line(ev) {
                    self.println(line);
                }
            }
        }
    }

    fn advance(&mut self) {
        if let Some(bar) = &self.main {
            bar.inc(1);
        }
        self.describe();
    }

    /// The main bar's message: counts so far, and the instances in flight without a bar.
    fn describe(&self) {
        if let Some(bar) = &self.main {
            let more = if self.unshown.is_empty() {
                String::new()
            } else {
                format!(" · {} more in flight", self.unshown.len())
            };
            bar.set_message(format!(
                "ran {} · cached {} · failed {}{more}",
                self.ran, self.cached_n, self.failed
            ));
        }
    }

    /// A spinner line for a running instance.
    fn show(&mut self, instance: PlanIndex, id: String) {
        let bar = self.multi.insert_from_back(1, ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {prefix} {msg}").expect("valid template"),
        );
        bar.set_prefix(id);
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars.insert(instance, bar);
    }

    /// Cache hits: one line each when few, else one line per stage.
    fn flush_cached(&mut self) {
        if self.cached.is_empty() {
            return;
        }
        let cached = std::mem::take(&mut self.cached);
        if cached.len() <= 12 {
            for (_, id) in cached {
                self.println(format!("  cached  {id}"));
            }
            return;
        }
        let mut by_stage: Vec<(String, usize)> = Vec::new();
        for (stage, _) in cached {
            match by_stage.last_mut() {
                Some((s, n)) if *s == stage => *n += 1,
                _ => by_stage.push((stage, 1)),
            }
        }
        for (stage, n) in by_stage {
            self.println(format!(
                "  cached  {stage}: {n} instance{}",
                if n == 1 { "" } else { "s" }
            ));
        }
    }

    pub fn finish(mut self) {
        let _ = self.json.flush();
        let _ = self.plain.flush();
        if let Some(bar) = self.main.take() {
            bar.finish_and_clear();
        }
    }
}

pub fn summary_line(s: &Summary) -> String {
    let submitted = if s.submitted > 0 {
        format!(", {} left running on Slurm", s.submitted)
    } else {
        String::new()
    };
    let of = |diverged: usize, pruned: usize| {
        let parts: Vec<String> = [(diverged, "diverged"), (pruned, "pruned")]
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    format!(
        "{} ran{}, {} cached{}, {} failed, {} skipped{submitted} in {}",
        s.ran,
        of(s.diverged, s.pruned),
        s.cached,
        of(s.cached_diverged, s.cached_pruned),
        s.failed,
        s.skipped,
        fmt_secs(s.seconds)
    )
}

/// `  rung    train at 10: 3 of 9 configurations go on (best lr=0.003: 0.1234, …)`.
fn rung_line(r: &ablate_run::RungResult) -> String {
    let show = |(config, v, seeds): &(String, f64, usize)| {
        let config = if config.is_empty() { "(one)" } else { config };
        let seeds = if *seeds > 1 {
            format!(" over {seeds} seeds")
        } else {
            String::new()
        };
        format!("{config}: {}{seeds}", ablate_results::format_metric(*v))
    };
    let kept: Vec<String> = r.ranking[..r.kept].iter().take(3).map(show).collect();
    let more = if r.kept > 3 { ", …" } else { "" };
    format!(
        "  rung    {} at {}: {} of {} configuration{} go on ({}{more})",
        r.stage,
        r.step,
        r.kept,
        r.ranking.len(),
        plural(r.ranking.len()),
        kept.join(", ")
    )
}

fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0}ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// `` `loss` = NaN at step 5 ``.
fn divergence(d: &ablate_run::Divergence) -> String {
    match d.step {
        Some(step) => format!("`{}` = {} at step {step}", d.metric, d.value),
        None => format!("`{}` = {}", d.metric, d.value),
    }
}

/// `  (diverged: `loss` = NaN at step 5)` after a cached instance's id; empty when done.
fn diverged_note(d: &Option<ablate_run::Divergence>) -> String {
    d.as_ref()
        .map(|d| format!("  (diverged: {})", divergence(d)))
        .unwrap_or_default()
}

/// `  (pruned at step 9)` after a cached instance's id; empty unless early stopping pruned it.
fn pruned_note(status: &ablate_cache::EntryStatus) -> String {
    match status {
        ablate_cache::EntryStatus::Pruned { step } => format!("  (pruned at step {step})"),
        _ => String::new(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn indent(s: &str, by: &str) -> String {
    s.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::group_progress;

    #[test]
    fn a_group_line_shows_the_slowest_step_and_each_loss_or_their_range() {
        assert_eq!(group_progress(&[None, None]), "");
        assert_eq!(
            group_progress(&[Some((120, 300, Some(0.41))), Some((121, 300, Some(0.63)))]),
            "120/300 loss 0.4100 0.6300"
        );
        // A member without progress yet does not hold the line back.
        assert_eq!(group_progress(&[None, Some((5, 10, None))]), "5/10");
        let many: Vec<_> = [0.5, 0.41, 0.63, 0.45, 0.52]
            .iter()
            .map(|l| Some((7, 9, Some(*l))))
            .collect();
        assert_eq!(group_progress(&many), "7/9 loss 0.4100 … 0.6300");
    }
}
