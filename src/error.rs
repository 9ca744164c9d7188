//! Error chains on one line, for messages and plan reasons that embed a
//! cause (the CLI's own error printer shows one `caused by:` per level instead).

/// `top: cause: cause's cause`, each level's `Display` once.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
