//! Placeholder for the verdict types until the verdict branch lands.
pub struct Output {
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}
#[derive(Debug, Clone)]
pub struct Matcher {
    pub exit: Option<Vec<i32>>,
    pub stdout: Option<regex::Regex>,
    pub stderr: Option<regex::Regex>,
}
#[derive(Debug, Clone)]
pub struct HttpExpect {
    pub status: Option<Vec<u16>>,
    pub body: Option<regex::Regex>,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Abort(String),
}
