//! io_uring plumbing shared by the io_uring client (`crate::engine`) and the floor programs
//! (`crate::floor`): a ring set up the way ringcast's shards set theirs up, the `user_data`
//! tag, a batched harvest of completions (`ring`), and the provided buffer ring that multishot
//! receives draw from (`buffers`). Learned from ringcast's `src/shard/ring.rs` and
//! `buffers.rs`, not imported: the load generator checks the server and shares none of its code.

pub mod buffers;
pub mod ring;
