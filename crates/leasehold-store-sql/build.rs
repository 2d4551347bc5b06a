//! The migration files are embedded by `sqlx::migrate!`; a file added to `migrations/` must
//! rebuild the crate, which Cargo does not know without this.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
