//! Stop strings over streamed text: text is held back only while it could still be the start
//! of a stop string, and nothing from a stop string onwards is ever emitted.

pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds `piece`; returns the text that is now safe to emit, and whether a stop string
    /// was found (everything from it on is dropped).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.pending.push_str(piece);
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = found {
            let emit = self.pending[..at].to_string();
            self.pending.clear();
            return (emit, true);
        }
        let keep = self.held_suffix();
        let emit = self.pending[..self.pending.len() - keep].to_string();
        self.pending.drain(..self.pending.len() - keep);
        (emit, false)
    }

    /// The held-back text, once generation has ended without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop string.
    fn held_suffix(&self) -> usize {
        let p = &self.pending;
        self.stops
            .iter()
            .flat_map(|s| {
                (1..s.len().min(p.len() + 1))
                    .rev()
                    .find(|&n| s.is_char_boundary(n) && p.ends_with(&s[..n]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_matches_and_cuts_at_stops() {
        let stops = vec!["</end>".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("hello </"), ("hello ".to_string(), false));
        assert_eq!(m.push("e"), (String::new(), false));
        assert_eq!(m.push("x"), ("</ex".to_string(), false));
        assert_eq!(m.push("ok</end>tail"), ("ok".to_string(), true));
    }

    #[test]
    fn finish_releases_held_text() {
        let stops = vec!["STOP".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("a ST"), ("a ".to_string(), false));
        assert_eq!(m.finish(), "ST");
    }
}
