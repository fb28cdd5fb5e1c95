//! The cloneable error source shared by the error types of the parts.
//!
//! Each part's error lives beside its trait ([`TransportError`](crate::transport::TransportError)
//! in [`transport`](crate::transport), [`EngineError`](crate::engine::EngineError) in
//! [`engine`](crate::engine), …). When a part fails for a reason of its own (an I/O error, a
//! database error, a library's error), the typed variant keeps that error as its
//! [`source`](std::error::Error::source), wrapped in a [`SharedError`] so that the variant stays
//! `Clone` (events and actions carry errors to several places).

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// A cloneable, type-erased error kept as the source of a typed error.
///
/// Its `Display` is the wrapped error's; [`SharedError::downcast_ref`] gets the concrete error
/// back (for example an `std::io::Error`, a `redb::Error`, an `InferenceError`).
///
/// ```
/// use rakis_core::error::SharedError;
/// use rakis_core::store::StoreError;
///
/// let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
/// let err = StoreError::Io { context: "writing a record".into(), source: SharedError::new(io) };
/// let source = std::error::Error::source(&err).unwrap();
/// assert_eq!(source.to_string(), "disk full");
/// let StoreError::Io { source, .. } = &err else { unreachable!() };
/// let io = source.downcast_ref::<std::io::Error>().unwrap();
/// assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
/// ```
#[derive(Clone)]
pub struct SharedError(Arc<dyn Error + Send + Sync + 'static>);

impl SharedError {
    /// Wraps an error.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        SharedError(Arc::new(error))
    }

    /// Wraps a boxed error (as libraries such as `tokenizers` return them).
    pub fn from_boxed(error: Box<dyn Error + Send + Sync + 'static>) -> Self {
        SharedError(Arc::from(error))
    }

    /// An error that is only a message (a cause with no error type of its own).
    pub fn msg(message: impl fmt::Display) -> Self {
        SharedError::new(Message(message.to_string()))
    }

    /// The wrapped error, if it is an `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for SharedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// A plain message used as an error ([`SharedError::msg`]).
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}
