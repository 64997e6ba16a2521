//! Temporary display until the reporters land: one JSON line per event on stderr.
use crate::engine::{Event, Sink};

struct Lines(bool);
impl Sink for Lines {
    fn emit(&mut self, event: &Event) {
        let line = crate::journal::record(event).to_string();
        if self.0 {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

pub fn for_terminal(json: bool) -> Vec<Box<dyn Sink>> {
    vec![Box::new(Lines(json))]
}
