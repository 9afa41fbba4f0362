//! Media state of a participant and the in-call control actions that change it.

use serde::{Deserialize, Serialize};

/// What a participant is sending, as far as the room knows. Late joiners see it in `joined`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaState {
    /// Microphone muted.
    pub audio_muted: bool,
    /// Camera off.
    pub video_off: bool,
    /// Sharing a screen.
    pub screen_sharing: bool,
    /// Which camera is in use (`"user"`/`"environment"`, or a label); swapped by `swap_camera`.
    pub camera: String,
    /// Video paused by the server because the link is too poor (audio-only fallback).
    pub video_paused: bool,
}

/// An in-call control action (`{"type":"control","action":...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    /// Mute the microphone.
    MuteAudio,
    /// Unmute the microphone.
    UnmuteAudio,
    /// Turn the camera off.
    VideoOff,
    /// Turn the camera on.
    VideoOn,
    /// Start sharing a screen.
    ScreenShareStart,
    /// Stop sharing a screen.
    ScreenShareStop,
    /// Switch between front and back camera.
    SwapCamera,
}

impl MediaState {
    /// The initial state of a new participant.
    pub fn initial() -> Self {
        Self { camera: "user".into(), ..Self::default() }
    }

    /// Applies a control action; returns whether anything changed.
    pub fn apply(&mut self, action: ControlAction) -> bool {
        let before = self.clone();
        match action {
            ControlAction::MuteAudio => self.audio_muted = true,
            ControlAction::UnmuteAudio => self.audio_muted = false,
            ControlAction::VideoOff => self.video_off = true,
            ControlAction::VideoOn => self.video_off = false,
            ControlAction::ScreenShareStart => self.screen_sharing = true,
            ControlAction::ScreenShareStop => self.screen_sharing = false,
            ControlAction::SwapCamera => {
                self.camera = if self.camera == "environment" { "user" } else { "environment" }.into()
            }
        }
        *self != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_change_state() {
        let mut m = MediaState::initial();
        assert!(m.apply(ControlAction::MuteAudio));
        assert!(!m.apply(ControlAction::MuteAudio), "muting twice changes nothing");
        assert!(m.audio_muted);
        assert!(m.apply(ControlAction::SwapCamera));
        assert_eq!(m.camera, "environment");
        assert!(m.apply(ControlAction::SwapCamera));
        assert_eq!(m.camera, "user");
        assert!(m.apply(ControlAction::ScreenShareStart));
        assert!(m.screen_sharing);
    }
}
