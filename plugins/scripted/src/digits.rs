//! The number a caller said, as the digits a tool argument needs (an order number, a PIN): a
//! recognizer writes "1042", "1,042" or "10-42", or spells it out as "one zero four two", "one
//! oh four two" or "ten forty-two". Whole numbers read as quantities ("one thousand and
//! forty-two") are not understood: a script asks for numbers digit by digit.

/// Digit words.
const UNITS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// Ten to nineteen.
const TEENS: [&str; 10] = [
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

/// Twenty to ninety, by tens.
const TENS: [&str; 8] = [
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// The longest run of digits in `words` (lowercase words, as the script splits an utterance;
/// the first of equal runs), or `None` when there is none. Consecutive number words and
/// numerals form one run; "oh" is a zero inside a run but not a run on its own ("oh, my order").
pub fn digits(words: &[String]) -> Option<String> {
    let mut best = String::new();
    let mut run = String::new();
    // The run holds more than "oh"s.
    let mut real = false;
    let mut i = 0;
    while i < words.len() {
        let word = words[i].as_str();
        let next = words.get(i + 1).map(String::as_str);
        let unit = |w: &str| UNITS.iter().position(|u| *u == w);
        let mut taken = 1;
        let piece = if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
            Some(word.to_string())
        } else if let Some(n) = unit(word) {
            Some(n.to_string())
        } else if let Some(n) = TEENS.iter().position(|t| *t == word) {
            Some((10 + n).to_string())
        } else if let Some(n) = TENS.iter().position(|t| *t == word) {
            match next.and_then(unit).filter(|u| *u > 0) {
                Some(u) => {
                    taken = 2;
                    Some(format!("{}{u}", n + 2))
                }
                None => Some(format!("{}0", n + 2)),
            }
        } else if word == "oh" || word == "o" {
            run.push('0');
            i += 1;
            continue;
        } else {
            None
        };
        match piece {
            Some(piece) => {
                run.push_str(&piece);
                real = true;
            }
            None => {
                if real && run.len() > best.len() {
                    best = run.clone();
                }
                run.clear();
                real = false;
            }
        }
        i += taken;
    }
    if real && run.len() > best.len() {
        best = run;
    }
    (!best.is_empty()).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(text: &str) -> Option<String> {
        let words: Vec<String> = text
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        digits(&words)
    }

    #[test]
    fn numerals_and_spoken_digits_give_the_same_number() {
        for said in [
            "Where is order 1042?",
            "Where is order 1,042?",
            "Order 10-42, please.",
            "My order is one zero four two.",
            "my order is One oh four two",
            "order ten forty-two",
            "order ten forty two",
            "order 10 four two",
        ] {
            assert_eq!(heard(said).as_deref(), Some("1042"), "{said}");
        }
        assert_eq!(heard("order twenty").as_deref(), Some("20"));
        assert_eq!(heard("order zero zero seven").as_deref(), Some("007"));
    }

    #[test]
    fn the_longest_run_wins_and_oh_alone_is_not_a_number() {
        assert_eq!(
            heard("I have 2 questions about order 5 5 1 2").as_deref(),
            Some("5512")
        );
        assert_eq!(heard("one thing: order 77 or 88").as_deref(), Some("77"));
        assert_eq!(heard("oh, where is my order?"), None);
        assert_eq!(heard("where is my order"), None);
    }
}
