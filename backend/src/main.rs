//! `picket-backend`: see the library docs.
fn main() {}
