//! `recover hold RUNBOOK --for 2h --why "…"` and `recover hold RUNBOOK --release`.

use crate::cli::HoldArgs;
use crate::error::Error;
use crate::exit::Exit;
use crate::hold::{self, Hold};
use crate::state::StateDir;

pub fn hold(a: &HoldArgs) -> Result<Exit, Error> {
    let opts = crate::plan::Options::from_process_env();
    let (_, plan) = super::load_plan(&a.runbook, &a.overlays, &opts)?;
    let state = StateDir::from_env().ok_or(Error::NoStateDir)?;
    let key = plan.state_key();
    let io = |e: std::io::Error| Error::Write {
        path: hold::path(&state, &key),
        source: e,
    };
    if a.release {
        let was = hold::read(&state, &key).ok().flatten();
        if hold::release(&state, &key).map_err(io)? {
            // The watch's count of runs for the power event starts again: a person acted.
            crate::watch::forget_attempts(&state, &key);
            eprintln!(
                "{key}: hold released by {}{}",
                hold::who(),
                was.map(|h| format!(" (it was {})", h.describe()))
                    .unwrap_or_default()
            );
        } else {
            eprintln!("{key}: there was no hold");
        }
        return Ok(Exit::Ok);
    }
    let (Some(length), Some(why)) = (a.length, &a.why) else {
        return Err(Error::Usage(
            "say --for DURATION and --why TEXT, or --release".into(),
        ));
    };
    let h = Hold::new(hold::who(), why.clone(), chrono::Utc::now(), length);
    let path = hold::write(&state, &key, &h).map_err(io)?;
    eprintln!(
        "{key}: {}; `recover watch` starts nothing until then ({})",
        h.describe(),
        path.display()
    );
    Ok(Exit::Ok)
}
