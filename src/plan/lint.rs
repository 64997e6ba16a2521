//! Lints: things that are legal but probably wrong. Warnings, unless `check --strict`.

use super::{Action, Plan, fmt_duration};
use crate::runbook::diag::{Pos, Problem};
use crate::runbook::{Field, Loaded};

/// Everything `check` warns about in a runbook that resolved cleanly.
pub fn lint(loaded: &Loaded, plan: &Plan) -> Vec<Problem> {
    let src = &loaded.source;
    let mut out = Vec::new();
    let steps: Vec<_> = plan.steps().collect();

    // Starting services before the page cache is dropped defeats the drop.
    if let Some(drop) = steps
        .iter()
        .find(|s| matches!(s.action, Action::DropCaches(_)))
    {
        for s in steps.iter().filter(|s| s.number < drop.number) {
            if let Action::Start { unit, .. } = &s.action {
                out.push(
                    Problem::warning(src, s.pos, format!("`{unit}` starts before the page cache is dropped (step {})", drop.number))
                        .help("move drop_caches before the first start: a model loaded before the drop is evicted and reloaded from disk"),
                );
            }
        }
    }

    for s in &steps {
        if let Action::Start { unit, health, .. } = &s.action {
            match health {
                None => out.push(
                    Problem::warning(src, s.pos, format!("`{unit}` has no health gate: only `active` will be checked"))
                        .help("add `health:` with a probe of the real work; a hung model still answers /health with 200"),
                ),
                Some(g) if !s.timeout_explicit && g.timeout > s.timeout => out.push(
                    Problem::warning(
                        src,
                        s.pos,
                        format!(
                            "the default step timeout ({}) is shorter than the health gate's {}: the gate is cut short",
                            fmt_duration(s.timeout),
                            fmt_duration(g.timeout)
                        ),
                    )
                    .help(format!("set `timeout:` on the step, e.g. `timeout: {}`", fmt_duration(g.timeout + std::time::Duration::from_secs(30)))),
                ),
                Some(_) => {}
            }
        }
    }

    // A step whose allowance alone is longer than its phase's window overruns the window
    // whenever it uses its allowance. Allowances are worst cases, so their sum may exceed the
    // window (not every step runs long); one step that cannot fit is a timeline nobody can keep.
    for ph in &plan.phases {
        let window = ph.window.end.saturating_sub(ph.window.start);
        for s in ph.steps.iter().filter(|s| s.timeout > window) {
            out.push(
                Problem::warning(
                    src,
                    s.pos,
                    format!(
                        "step {} allows {}, longer than the {} window of phase `{}`: used in full, it overruns the window on its own",
                        s.number,
                        fmt_duration(s.timeout),
                        fmt_duration(window),
                        ph.name
                    ),
                )
                .help(format!(
                    "shorten the step's timeout to {} or less, or widen the phase's `window:`",
                    fmt_duration(window)
                )),
            );
        }
    }

    // Webhook URLs are credentials: they belong in the environment.
    for (name, ch) in loaded.runbook.notify.iter() {
        let url = &ch.webhook.value;
        if !url.contains("env.") && looks_secret(url) {
            out.push(
                Problem::warning(loaded.source_of(&Field::Webhook(name.value.clone())), Pos::of(&ch.webhook.referenced), format!("channel `{}` has a literal webhook URL that looks like a credential", name.value))
                    .help("read it from the environment: `webhook: \"{{ env.RECOVER_WEBHOOK }}\"`, so it never lands in the journal, a printout or git"),
            );
        }
    }

    // A run that fails, aborts or is stopped is posted to the failure channels: with channels
    // but none of them for failures, nobody would be told.
    if let Some((name, _)) = loaded.runbook.notify.iter().next()
        && crate::engine::failure::failure_channels(plan).is_empty()
    {
        out.push(
            Problem::warning(
                loaded.source_of(&Field::Webhook(name.value.clone())),
                Pos::of(&name.referenced),
                "no channel gets the failure post: a run that fails, aborts or is stopped tells nobody",
            )
            .help(format!(
                "name a channel in `abort: {{ notify: {} }}`, or mark one `failures: true`",
                name.value
            )),
        );
    }

    // Gaps in the timeline: time nobody planned for.
    let mut prev_end = std::time::Duration::ZERO;
    for (i, (ph, raw)) in plan
        .phases
        .iter()
        .zip(loaded.runbook.phases.value.iter())
        .enumerate()
    {
        if ph.window.start > prev_end {
            let (after, help) = if i == 0 {
                (
                    "before the first phase".to_owned(),
                    "start the first window at 0s: the clock starts when the run does".to_owned(),
                )
            } else {
                (
                    format!("after phase `{}`", plan.phases[i - 1].name),
                    format!(
                        "start this window at {}, or extend the previous one",
                        fmt_duration(prev_end)
                    ),
                )
            };
            out.push(
                Problem::warning(
                    src,
                    Pos::of(&raw.window.referenced),
                    format!(
                        "gap in the timeline: {} to {} belongs to no phase ({after})",
                        fmt_duration(prev_end),
                        fmt_duration(ph.window.start)
                    ),
                )
                .help(help),
            );
        }
        prev_end = prev_end.max(ph.window.end);
    }
    out
}

/// Known webhook hosts carry their secret in the path; long random tokens are secrets anywhere.
fn looks_secret(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    if [
        "hooks.slack.com/",
        "discord.com/api/webhooks/",
        "discordapp.com/api/webhooks/",
        "token=",
        "key=",
        "secret=",
    ]
    .iter()
    .any(|m| lower.contains(m))
    {
        return true;
    }
    let no_scheme = lower.split_once("://").map(|(_, r)| r).unwrap_or(&lower);
    let userinfo = no_scheme.split('/').next().unwrap_or("").contains('@');
    userinfo
        || url.split(['/', '?', '&', '=', '.']).any(|seg| {
            seg.len() >= 20
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && seg.chars().any(|c| c.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::looks_secret;

    #[test]
    fn secret_looking_urls() {
        assert!(looks_secret(
            "https://hooks.slack.com/services/T000/B000/XXXX"
        ));
        assert!(looks_secret("https://discord.com/api/webhooks/123/abc"));
        assert!(looks_secret("https://ntfy.sh/x?token=abc"));
        assert!(looks_secret("https://user:pw@example.com/hook"));
        assert!(looks_secret(
            "https://example.com/hook/a8f3k2m9q7x1v5b3n6z0c4"
        ));
        assert!(!looks_secret("https://ntfy.sh/spark-recovery"));
        assert!(!looks_secret("http://127.0.0.1:8080/webhook"));
    }
}
