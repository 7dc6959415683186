//! The device of a vendor whose feature is off: types with no values, so the one GPU
//! driver and `Target` compile in every build, and opening a device says why it cannot
//! (candle's dummy-backend pattern). `stub_device!` writes one, for `cuda_stub.rs` and
//! `hip_stub.rs`.

/// `stub_device!(Device, Kernels, Stream, "what", "feature")`: an uninhabited `Device`
/// implementing `Runtime` with uninhabited `Kernels` and `Stream`, whose `new` answers
/// `Error::NoDevice`.
macro_rules! stub_device {
    ($device:ident, $kernels:ident, $stream:ident, $what:literal, $feature:literal) => {
        use $crate::device::{Arg, Capabilities, LaunchConfig, ModuleSource, Runtime};
        use $crate::error::{Error, Result};

        #[doc = concat!("No ", $feature, " in this build: never constructed.")]
        #[derive(Debug)]
        pub enum $device {}

        /// No kernels without the feature: never constructed.
        #[derive(Debug)]
        pub enum $kernels {}

        /// No streams without the feature: never constructed.
        #[derive(Debug, Clone, Copy)]
        pub enum $stream {}

        impl $device {
            /// Always `Error::NoDevice`: this build lacks the feature.
            pub fn new(ordinal: usize) -> Result<$device> {
                Err(Error::NoDevice(format!(
                    concat!(
                        $what,
                        " {}: this build of fleetmoe has no support for it (build with --features ",
                        $feature,
                        ")"
                    ),
                    ordinal
                )))
            }

            pub fn ordinal(&self) -> usize {
                match *self {}
            }
        }

        impl Runtime for $device {
            type Stream = $stream;
            type Alloc = std::convert::Infallible;
            type Module = $kernels;

            fn capabilities(&self) -> &Capabilities {
                match *self {}
            }
            fn stream(&self) -> &$stream {
                match *self {}
            }
            fn check_stream(&self, _: &$stream) -> Result<()> {
                match *self {}
            }
            fn alloc(&self, _: usize) -> Result<Self::Alloc> {
                match *self {}
            }
            fn address(&self, _: &Self::Alloc) -> u64 {
                match *self {}
            }
            fn upload(&self, _: u64, _: &[u8], _: &$stream) -> Result<()> {
                match *self {}
            }
            fn download(&self, _: u64, _: &mut [u8], _: &$stream) -> Result<()> {
                match *self {}
            }
            fn zero(&self, _: u64, _: usize, _: &$stream) -> Result<()> {
                match *self {}
            }
            fn synchronize(&self, _: &$stream) -> Result<()> {
                match *self {}
            }
            fn load(&self, _: &ModuleSource<'_>) -> Result<$kernels> {
                match *self {}
            }
            fn launch(
                &self,
                _: &$kernels,
                _: &str,
                _: LaunchConfig,
                _: &[Arg<'_>],
                _: &$stream,
            ) -> Result<()> {
                match *self {}
            }
        }
    };
}

pub(crate) use stub_device;
