//! `RemoveApplication` (Apple's `mdm/commands/application.remove.yaml`): remove a
//! managed app and its data. The response has no keys beyond the status.

use serde::{Deserialize, Serialize};

/// The `RemoveApplication` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveApplication {
    /// The bundle identifier of the managed app to remove.
    #[serde(rename = "Identifier")]
    pub identifier: String,
}
