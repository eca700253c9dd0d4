pub mod http_api;
pub mod topic_name;
