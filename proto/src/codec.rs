//! The codec of every generated client and server: prost, with 1 KiB message buffers.
//!
//! tonic allocates its encode and decode buffers eagerly, once per call, and keeps them for
//! the call's life. With the default 8 KiB each, a coordinator holding 10,000 agent sessions
//! (each one long-lived streaming call) kept 160 MiB of buffers for messages that are mostly
//! under 300 bytes. The buffers still grow, 1 KiB at a time, for a larger message.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial size and growth step of a call's buffers.
pub const BUFFER_BYTES: usize = 1024;
/// tonic's own default: how much an encoder writes before it yields.
pub const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

/// `tonic_prost::ProstCodec` with [`BUFFER_BYTES`] buffers (set in `build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
