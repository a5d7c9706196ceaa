//! Stop sequences: the answer ends right before the first of them, whichever
//! backend produced it, even when a sequence arrives split across tokens. Text
//! that could be the start of a sequence is held back until the next token says
//! whether it is.

/// What a token became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Text to emit now (possibly empty: all of it is held back).
    Emit(String),
    /// A stop sequence was reached: the text before it, and nothing after.
    Stopped(String),
}

/// Watches an answer's text for its stop sequences.
#[derive(Debug, Default)]
pub struct StopScanner {
    stops: Vec<String>,
    held: String,
}

impl StopScanner {
    /// A scanner for `stops` (empty ones are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Takes the next token.
    pub fn push(&mut self, piece: String) -> Scan {
        if self.stops.is_empty() {
            return Scan::Emit(piece);
        }
        self.held.push_str(&piece);
        let first = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = first {
            self.held.truncate(at);
            return Scan::Stopped(std::mem::take(&mut self.held));
        }
        let keep = self
            .stops
            .iter()
            .map(|stop| partial_match(&self.held, stop))
            .max()
            .unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - keep);
        Scan::Emit(std::mem::replace(&mut self.held, rest))
    }

    /// The text held back when the answer ended without reaching a stop sequence.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest end of `text` that begins `stop` (and is shorter than
/// it: a whole one was looked for first).
fn partial_match(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&len| stop.is_char_boundary(len) && text.ends_with(&stop[..len]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| (*s).to_owned()).collect();
        let mut scanner = StopScanner::new(&stops);
        let mut out = Vec::new();
        for piece in pieces {
            match scanner.push((*piece).to_owned()) {
                Scan::Emit(text) => out.push(text),
                Scan::Stopped(text) => {
                    out.push(text);
                    return (out, true);
                }
            }
        }
        out.push(scanner.finish());
        (out, false)
    }

    #[test]
    fn without_stops_tokens_pass_unchanged() {
        assert_eq!(
            run(&[], &["a", "b"]),
            (vec!["a".into(), "b".into(), String::new()], false)
        );
    }

    #[test]
    fn a_stop_split_across_tokens_is_found_and_left_out() {
        let (out, stopped) = run(&["END"], &["one E", "N", "D two"]);
        assert!(stopped);
        assert_eq!(out.concat(), "one ");
        // "E" was held back, never emitted before the stop was known.
        assert_eq!(out[0], "one ");
    }

    #[test]
    fn a_false_start_is_released() {
        let (out, stopped) = run(&["END"], &["an E", "gg"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "an Egg");
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_multibyte_text_is_safe() {
        let (out, stopped) = run(&["é!", "\n\n"], &["café", "!\n\nmore"]);
        assert!(stopped);
        assert_eq!(out.concat(), "caf");
    }
}
