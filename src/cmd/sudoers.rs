//! `recover sudoers`: the drop-in that permits exactly the runbook's sudo commands.

use crate::cli::SudoersArgs;
use crate::error::Error;
use crate::exit::Exit;

pub fn sudoers(a: &SudoersArgs) -> Result<Exit, Error> {
    let (_, plan) = super::load_plan(&a.runbook, &a.resolve.overlays, &super::options(&a.resolve))?;
    let text = crate::sudoers::drop_in(&plan, a.user.as_deref(), a.drill)?;
    super::tools::print("the sudoers drop-in", text.as_bytes())
}
