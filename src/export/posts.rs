//! The posts a person sends from the binder when a recovery stops: the ABORT post and the
//! failure (escalation) post. Their wording is here and only here, in the words of the
//! engine's failure post (`engine::failure::compose`), with blanks where only the person knows
//! the value; change the two together.
//!
//! A blank is a token in the message (`__N__`); in the typed `curl` line it becomes the shell
//! variable the person sets first (`N=__`), or one the binder's own lines fill in (`OUT`: the
//! step's last output lines; `UNITS`: which units are active).

/// One blank of a post: the token in the message, the variable that fills it, and the line
/// that sets it (with `__` where the person writes).
#[derive(Debug, Clone, Copy)]
pub struct Blank {
    pub token: &'static str,
    pub var: &'static str,
}

/// The step's number.
pub const N: Blank = Blank {
    token: "__N__",
    var: "N",
};
/// The step's title.
pub const NAME: Blank = Blank {
    token: "__NAME__",
    var: "NAME",
};
/// The reason, in the person's words.
pub const WHY: Blank = Blank {
    token: "__WHY__",
    var: "WHY",
};
/// The last lines of the step's saved output.
pub const OUT: Blank = Blank {
    token: "__OUT__",
    var: "OUT",
};
/// Which of the runbook's units are active.
pub const UNITS: Blank = Blank {
    token: "__UNITS__",
    var: "UNITS",
};
/// What happened on the way, from the person's notes.
pub const EVENTS: Blank = Blank {
    token: "__EVENTS__",
    var: "EVENTS",
};
/// Minutes since the recovery started: the template value the engine fills in.
pub const ELAPSED: Blank = Blank {
    token: "{{ run.elapsed }}",
    var: "ELAPSED",
};

/// Every blank, in the order their lines are typed.
pub const BLANKS: [Blank; 7] = [N, NAME, WHY, ELAPSED, EVENTS, OUT, UNITS];

/// How many of the step's last output lines the posts carry.
pub const OUTPUT_LINES: usize = 5;

/// The facts both posts open with, as the engine's failure post (`engine::failure::compose`)
/// words them.
pub struct Run<'a> {
    pub title: &'a str,
    /// `30m`.
    pub budget: &'a str,
    /// `spark (ops@spark.local)`.
    pub target: &'a str,
    /// `runbooks/spark-power.yaml`.
    pub source: &'a str,
}

fn opening(word: &str, r: &Run) -> String {
    format!(
        "{word}: {} stopped at step {} ({}) after {} of the {} budget, on {}.\nReason: {}",
        r.title, N.token, NAME.token, ELAPSED.token, r.budget, r.target, WHY.token
    )
}

fn closing(r: &Run, resume: &str) -> String {
    format!(
        "Last output of step {n}:\n> {}\nUnits: {}\n{resume}: recover run {} --from {n}\n(run by hand, from the binder)",
        OUT.token,
        UNITS.token,
        r.source,
        n = N.token,
    )
}

/// The ABORT post, as the engine's: what stopped where, the reason, the first paragraph of
/// the abort procedure, the step's last output, the units, how to continue.
pub fn abort_text(r: &Run, procedure: &str) -> String {
    format!(
        "{}\nThe abort procedure is being followed:\n{}\n{}",
        opening("ABORT", r),
        crate::engine::first_paragraph(procedure),
        closing(
            r,
            "Once the abort procedure is done, to continue from this step"
        )
    )
}

/// The failure post, sent when a step still fails and the run stops there: the box, the
/// step, the reason, its last output lines, which units are active, how long it ran, and the
/// resume command.
pub fn failure_text(r: &Run) -> String {
    format!(
        "{}\n{}",
        opening("FAILED", r),
        closing(r, "Fix the cause, then continue from this step")
    )
}

/// The last post of a run, as the binder has it sent: the runbook's message, then what
/// happened on the way (an unclean shutdown, a remedy applied, a step passed over).
pub fn last_post(message: &str) -> String {
    format!("{}\nOn the way: {}", message.trim_end(), EVENTS.token)
}

/// The message as the binder shows it: each blank as its variable (`$N`).
pub fn shown(message: &str) -> String {
    BLANKS.iter().fold(message.to_owned(), |m, b| {
        m.replace(b.token, &format!("${}", b.var))
    })
}

/// The line that fills `OUT`: the last lines of step `$N`'s saved output, on one line, without
/// the characters that would break a JSON body.
pub fn out_line() -> String {
    format!(
        "OUT=$(cat \"s$N.out\" \"s$N.err\" 2>/dev/null | tail -n {OUTPUT_LINES} | tr -c '[:print:]' ' ' | tr -d '\"\\\\')"
    )
}

/// The line a step prints for the posts: `N=9; NAME='GPU answers'` (quotes and backslashes
/// left out of the title, as they would break a JSON body).
pub fn step_line(number: usize, name: &str) -> String {
    let name: String = name
        .chars()
        .filter(|c| !"\"\\`".contains(*c) && !c.is_control())
        .collect();
    format!("N={number}; NAME={}", crate::template::shell_quote(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blanks_are_shown_as_variables() {
        let r = Run {
            title: "Box",
            budget: "30m",
            target: "spark (ops@spark.local)",
            source: "rb.yaml",
        };
        let t = abort_text(&r, "Stop.\n\nThen more.");
        assert_eq!(
            shown(&t),
            "ABORT: Box stopped at step $N ($NAME) after $ELAPSED of the 30m budget, on spark (ops@spark.local).\nReason: $WHY\nThe abort procedure is being followed:\nStop.\n(the rest of the procedure: see the binder)\nLast output of step $N:\n> $OUT\nUnits: $UNITS\nOnce the abort procedure is done, to continue from this step: recover run rb.yaml --from $N\n(run by hand, from the binder)"
        );
        let f = shown(&failure_text(&r));
        assert!(f.starts_with("FAILED: Box stopped at step $N"), "{f}");
        assert!(
            f.contains(
                "Fix the cause, then continue from this step: recover run rb.yaml --from $N"
            ),
            "{f}"
        );
    }

    #[test]
    fn the_step_line_is_typable() {
        assert_eq!(step_line(9, "GPU answers"), "N=9; NAME='GPU answers'");
        assert_eq!(step_line(2, "it's \"a\\b\""), r"N=2; NAME='it'\''s ab'");
        assert_eq!(step_line(3, "plain"), "N=3; NAME=plain");
    }
}
