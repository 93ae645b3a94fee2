//! `{name}` placeholders in the script's texts (replies, tool arguments): read at `open`, so a
//! name the script cannot fill is refused before any call, and filled at each turn.

/// The placeholder names of `text`, in order (`"Order {result.order} is {result.status}."` →
/// `["result.order", "result.status"]`).
///
/// # Errors
/// A `{` that is never closed; the message quotes `text`.
pub fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            return Err(format!("unclosed {{ in {text:?}"));
        };
        names.push(&rest[start + 1..start + len]);
        rest = &rest[start + len + 1..];
    }
    Ok(names)
}

/// `text` with each `{name}` replaced by `value(name)` (a `{` never closed stays as it is).
///
/// # Errors
/// The first name `value` has nothing for.
pub fn render(text: &str, value: impl Fn(&str) -> Option<String>) -> Result<String, &str> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 1..start + len];
        out.push_str(&value(name).ok_or(name)?);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_named_in_order_and_an_unclosed_one_is_an_error() {
        assert_eq!(
            placeholders("Order {result.order} is {result.status}.").unwrap(),
            ["result.order", "result.status"]
        );
        assert_eq!(placeholders("no slots").unwrap(), [] as [&str; 0]);
        assert!(
            placeholders("We open at {hours")
                .unwrap_err()
                .contains("unclosed")
        );
    }

    #[test]
    fn render_fills_every_name_or_names_the_first_missing() {
        let value = |name: &str| (name == "digits").then(|| "1042".to_string());
        assert_eq!(
            render("Order {digits}, {digits}.", value),
            Ok("Order 1042, 1042.".into())
        );
        assert_eq!(render("{digits} {eta}", value), Err("eta"));
    }
}
