//! How a checkpoint answer names its status and its trigger: serialised enums converted from
//! the store's, so the document's enums are derived from what is written.

use crate::store;
use serde::Serialize;
use utoipa::ToSchema;

/// Where a checkpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = CheckpointStatus)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStatusDto {
    Completed,
    Failed,
    InProgress,
}

impl From<store::CheckpointStatus> for CheckpointStatusDto {
    fn from(status: store::CheckpointStatus) -> CheckpointStatusDto {
        match status {
            store::CheckpointStatus::Completed => CheckpointStatusDto::Completed,
            store::CheckpointStatus::Failed => CheckpointStatusDto::Failed,
            store::CheckpointStatus::InProgress => CheckpointStatusDto::InProgress,
        }
    }
}

/// What took a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Trigger)]
#[serde(rename_all = "snake_case")]
pub enum TriggerDto {
    Periodic,
    Manual,
    Shutdown,
}

impl From<store::Trigger> for TriggerDto {
    fn from(trigger: store::Trigger) -> TriggerDto {
        match trigger {
            store::Trigger::Periodic => TriggerDto::Periodic,
            store::Trigger::Manual => TriggerDto::Manual,
            store::Trigger::Shutdown => TriggerDto::Shutdown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_triggers_are_written_with_the_stores_names() {
        use store::{CheckpointStatus as S, Trigger as T};
        for s in [S::Completed, S::Failed, S::InProgress] {
            let text = serde_json::to_string(&CheckpointStatusDto::from(s)).unwrap();
            assert_eq!(text, format!("{:?}", s.as_str()));
        }
        for t in [T::Periodic, T::Manual, T::Shutdown] {
            let text = serde_json::to_string(&TriggerDto::from(t)).unwrap();
            assert_eq!(text, format!("{:?}", t.as_str()));
        }
    }
}
