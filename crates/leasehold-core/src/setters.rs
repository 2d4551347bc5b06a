//! The builder-setter macro shared by the config types of the workspace.

/// Writes plain builder setters: for each listed field, a `#[must_use]` method of the same
/// name that stores its argument in that field and returns `self`. Each entry keeps its own
/// doc comment (and any other attributes). `const` before the type name makes the setters
/// `const fn`. `into` before it makes them take any `impl Into<T>`, and `into Some` stores
/// `Some(value.into())` in an `Option<T>` field.
///
/// Setters that do more than assign (conversions, `Option` wrapping, checks) are written by
/// hand.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(Debug, Default)]
/// pub struct PoolConfig {
///     connect_timeout: Duration,
///     size: usize,
/// }
///
/// leasehold_core::setters! {
///     PoolConfig {
///         /// Sets the connect timeout.
///         connect_timeout: Duration,
///         /// Sets the number of connections.
///         size: usize,
///     }
/// }
///
/// #[derive(Debug, Default)]
/// pub struct Flags {
///     strict: bool,
/// }
///
/// leasehold_core::setters! {
///     const Flags {
///         /// Sets strict mode.
///         strict: bool,
///     }
/// }
///
/// let pool = PoolConfig::default()
///     .connect_timeout(Duration::from_secs(2))
///     .size(4);
/// assert_eq!(pool.connect_timeout, Duration::from_secs(2));
/// assert_eq!(pool.size, 4);
///
/// const STRICT: Flags = Flags { strict: false }.strict(true);
/// assert!(STRICT.strict);
///
/// #[derive(Debug, Default)]
/// pub struct Names {
///     path: String,
///     boundary: Option<String>,
/// }
///
/// leasehold_core::setters! {
///     into Names {
///         /// Sets the path.
///         path: String,
///     }
/// }
///
/// leasehold_core::setters! {
///     into Some Names {
///         /// Sets the boundary.
///         boundary: String,
///     }
/// }
///
/// let n = Names::default().path("/app/").boundary("arn:aws:iam::1:policy/b");
/// assert_eq!((n.path.as_str(), n.boundary.as_deref()), ("/app/", Some("arn:aws:iam::1:policy/b")));
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! setters {
    (into Some $ty:ty { $($(#[$attr:meta])* $field:ident: $arg:ty),* $(,)? }) => {
        impl $ty {
            $(
                $(#[$attr])*
                #[must_use]
                pub fn $field(mut self, value: impl Into<$arg>) -> Self {
                    self.$field = Some(value.into());
                    self
                }
            )*
        }
    };
    (into $ty:ty { $($(#[$attr:meta])* $field:ident: $arg:ty),* $(,)? }) => {
        impl $ty {
            $(
                $(#[$attr])*
                #[must_use]
                pub fn $field(mut self, value: impl Into<$arg>) -> Self {
                    self.$field = value.into();
                    self
                }
            )*
        }
    };
    (const $ty:ty { $($(#[$attr:meta])* $field:ident: $arg:ty),* $(,)? }) => {
        impl $ty {
            $($crate::setters!(@fn (const) $(#[$attr])* $field: $arg);)*
        }
    };
    (@fn ($($qualifier:tt)?) $(#[$attr:meta])* $field:ident: $arg:ty) => {
        $(#[$attr])*
        #[must_use]
        pub $($qualifier)? fn $field(mut self, value: $arg) -> Self {
            self.$field = value;
            self
        }
    };
    ($ty:ty { $($(#[$attr:meta])* $field:ident: $arg:ty),* $(,)? }) => {
        impl $ty {
            $($crate::setters!(@fn () $(#[$attr])* $field: $arg);)*
        }
    };
}
