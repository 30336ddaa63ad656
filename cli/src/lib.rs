//! The `farm` command line: submitting jobs, writing their output, and the
//! embedded cluster used when no coordinator is named.
//!
//! - [`args`]: the command-line interface.
//! - [`exit`]: exit codes, and the one mapping of errors to them.
//! - [`submit`]: where a job runs and how its values reach the output.
//! - [`client`]: the coordinator's client side.
//! - [`receive`]: a job's values on their way to the output.
//! - [`embedded`]: a coordinator and worker inside this process.
//! - [`module`]: a job's function: a catalog name, or a user's
//!   WebAssembly module, read and checked.
//! - [`output`]: output files, and reading them back (`farm digest`).
//! - [`number`]: counts as people write them (`1e9`, `1_000_000`).
//! - [`report`]: printing results.
//! - [`token`]: `farm token`, and the client token `farm` presents.
//!
//! Dependencies flow one way: `submit` uses `client`, `receive`,
//! `embedded`, `module` and `output`; `client` uses `receive`; `receive` uses
//! `output`; `exit` sees every error.

pub mod args;
pub mod client;
pub mod embedded;
pub mod exit;
pub mod module;
pub mod number;
pub mod output;
pub mod receive;
pub mod report;
pub mod submit;
pub mod token;
