//! Certificate logic: issue, inspect and verify the relay chain. (In progress.)
