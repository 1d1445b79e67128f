//! The `pool` command: serve a warm project pool over HTTP, replay arrival traces against
//! it, and inspect or migrate its store.
//!
//! The library half holds everything the binary runs, so that tests drive the same code.
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `sqlite` (default) | `sqlite://PATH` stores (embedded SQLite, bundled) |
//! | `azure` | `azure://ACCOUNT/CONTAINER[/PREFIX]` stores and the `--azure-*` options |
//! | `s3` | `s3://BUCKET[/PREFIX]` stores and the `--s3-*` options |

pub mod admin;
pub mod http;
pub mod metrics;
pub mod provisioners;
pub mod replay;
pub mod serve;
pub mod settings;
pub mod stores;
