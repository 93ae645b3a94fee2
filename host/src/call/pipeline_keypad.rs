//! The keypad in the turn-taking: a key press interrupts the agent as speech does, and the keys
//! pressed become one caller turn (`DTMF: <keys>`) at `#` or after the keypad timeout.

use tokio::time::Instant;

use super::{Action, KEYPAD_PREFIX, MAX_KEYS, Reply, TurnLatency, Turns};
use crate::plugin::{Message, Role, StageInput};

impl Turns {
    /// A key press interrupts the agent as speech does, and adds to the keypad turn: `#` ends
    /// it, else it ends [`TurnConfig::keypad_timeout`] after the last key.
    pub(super) fn dtmf(&mut self, digit: String, now: Instant, out: &mut Vec<Action>) {
        let replying = self.reply.as_ref().is_some_and(|r| !r.interrupted);
        let barged = self.audible || replying;
        if barged {
            self.barge_in(out);
        }
        if digit != "#" {
            if self.keys.len() < MAX_KEYS {
                self.keys.push_str(&digit);
            }
            self.keys_deadline = Some(now + self.config.keypad_timeout);
        } else if !self.keys.is_empty() {
            // The turn ends now; after a barge-in, once the cut reply is settled (the call
            // task answers the clear first).
            if barged {
                self.keys_deadline = Some(now);
            } else {
                self.close_keypad_turn(now, out);
            }
        }
    }

    /// The keys pressed become the caller's turn, and the LLM is asked.
    pub(super) fn close_keypad_turn(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.keys_deadline = None;
        let keys = std::mem::take(&mut self.keys);
        if keys.is_empty() {
            return;
        }
        if self.reply.as_ref().is_some_and(|r| !r.interrupted) {
            // A reply to something else is on its way: the keys wait for it.
            self.keys = keys;
            self.keys_deadline = Some(now + self.config.keypad_timeout);
            return;
        }
        self.turn_ended = Some(now);
        self.latency = TurnLatency::default();
        self.resume = None;
        self.history
            .push(Message::text(Role::User, format!("{KEYPAD_PREFIX}{keys}")));
        self.reply = Some(Reply::default());
        out.push(Action::Llm(StageInput::Reply(self.request())));
    }
}
