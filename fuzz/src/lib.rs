//! Helpers shared by egress-guard's fuzz targets.
//!
//! - [`prefixes`]: the incremental-parser contract (every prefix answers `NeedMore` or the final
//!   answer), checked at a bounded number of cut points so a run stays fast.
//! - [`json`]: a JSON writer that keeps keys in the order written (repeats allowed), so a
//!   generated configuration is exactly the text the parser sees.
//! - [`gen`]: a structured configuration generator over small alphabets, optionally with
//!   injected faults whose error path is known in advance.
//! - [`oracle`]: checks on an accepted configuration: JSON round trip, compiled policy against
//!   [`egress_guard::policy::reference`], and the `decide_early` contract.

pub mod gen;
pub mod json;
pub mod oracle;
pub mod prefixes;
