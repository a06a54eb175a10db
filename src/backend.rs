//! Which Burn device training and evaluation run on.
//!
//! `cpu` is Burn's Flex backend (always built). `wgpu` needs the crate's `wgpu` feature
//! (`cargo build --release --features wgpu`); `auto` takes a wgpu adapter when the build
//! has one and a GPU answers, and the CPU otherwise, and says which it picked.

use burn::prelude::*;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    #[default]
    Cpu,
    Wgpu,
    Auto,
}

/// The chosen device (plain, without autodiff) and a line naming it.
pub fn select(choice: BackendChoice) -> Result<(Device, String)> {
    match choice {
        BackendChoice::Cpu => Ok((Device::flex(), "cpu (Burn flex)".into())),
        BackendChoice::Wgpu => wgpu().map_err(Error::Device),
        BackendChoice::Auto => Ok(wgpu().unwrap_or_else(|why| {
            (
                Device::flex(),
                format!("cpu (Burn flex): no GPU backend available ({why})"),
            )
        })),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu() -> std::result::Result<(Device, String), String> {
    use burn::tensor::DeviceKind;
    // Opening an adapter panics inside wgpu when there is none: probe with one small op.
    let probe = std::panic::catch_unwind(|| {
        let device = Device::wgpu(DeviceKind::DefaultDevice);
        let x = Tensor::<1>::ones([4], &device);
        let _: f32 = x.sum().into_scalar();
        device
    });
    match probe {
        Ok(device) => {
            let name = format!("wgpu {:?}", device.as_dispatch());
            Ok((device, name))
        }
        Err(_) => Err("wgpu found no usable adapter".into()),
    }
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> std::result::Result<(Device, String), String> {
    Err("this build has no wgpu backend; rebuild with `--features wgpu`".into())
}
