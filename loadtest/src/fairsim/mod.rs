//! `fairsim`: a seeded population of honest players, pros and cheaters played against
//! a real engine over HTTP, and a report of how the fairness guard judged them (see
//! FAIRNESS.md at the repository root).
//!
//! The pure parts (parameters, population, per-player plans, report arithmetic) are
//! deterministic per seed and unit tested; [`driver`] does the I/O.

pub mod driver;
pub mod family;
pub mod params;
pub mod plan;
pub mod population;
pub mod report;
pub mod tables;
