//! Running a kernel: its pipeline (compiled once per device from `kernels/*.wgsl`), its
//! arguments bound, one dispatch submitted.
//!
//! Every kernel takes its scalar arguments as `params: array<u32>` at binding 0 (f32s as
//! their bits) and its arrays at bindings 1, 2, ... in the order given; arrays are bound
//! whole and offsets travel in the params, since a view's offset need not meet the
//! adapter's binding alignment.

use std::collections::HashMap;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::{WgpuBuffer, WgpuDevice};
use crate::Result;

/// Every kernel module, by name: what the pipelines compile (see [`module_source`]) and
/// what the naga test translates to MSL and SPIR-V.
pub const KERNELS: [&str; 6] = [
    "argmax",
    "top_k_softmax",
    "weighted_sum",
    "layout",
    "embedding",
    "rope",
];

/// The sources: modules, and helpers (`blocks`: reading packed weights) that modules using
/// them get prepended, since WGSL has no includes.
const SOURCES: [(&str, &str); 7] = [
    ("argmax", include_str!("kernels/argmax.wgsl")),
    ("top_k_softmax", include_str!("kernels/top_k_softmax.wgsl")),
    ("weighted_sum", include_str!("kernels/weighted_sum.wgsl")),
    ("layout", include_str!("kernels/layout.wgsl")),
    ("embedding", include_str!("kernels/embedding.wgsl")),
    ("rope", include_str!("kernels/rope.wgsl")),
    ("blocks", include_str!("kernels/blocks.wgsl")),
];

/// The helpers each module uses.
const USES: [(&str, &str); 1] = [("embedding", "blocks")];

fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The WGSL module `name` compiles: the helpers it uses, then its own kernels.
pub fn module_source(name: &str) -> Option<String> {
    let own = KERNELS.contains(&name).then(|| source(name)).flatten()?;
    let mut text = String::new();
    for (_, helper) in USES.iter().filter(|(n, _)| *n == name) {
        text += source(helper)?;
        text += "\n";
    }
    Some(text + own)
}

/// Compiled pipelines of a device.
#[derive(Default)]
pub(crate) struct Pipelines {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    pipelines: HashMap<(&'static str, &'static str), Arc<wgpu::ComputePipeline>>,
}

/// One dispatch: kernel `entry` of module `module` over `groups` workgroups.
pub(crate) struct Launch<'a> {
    pub module: &'static str,
    pub entry: &'static str,
    pub params: &'a [u32],
    pub arrays: &'a [&'a WgpuBuffer],
    pub groups: (u32, u32, u32),
}

impl WgpuDevice {
    fn pipeline(&self, module: &'static str, entry: &'static str) -> Arc<wgpu::ComputePipeline> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.pipelines.get(&(module, entry)) {
            return Arc::clone(p);
        }
        let shader = cache.modules.entry(module).or_insert_with(|| {
            let source = module_source(module).expect("a known kernel module");
            self.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(module),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                })
        });
        let pipeline = Arc::new(self.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: shader,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            },
        ));
        cache
            .pipelines
            .insert((module, entry), Arc::clone(&pipeline));
        pipeline
    }

    /// Queues `launch`.
    pub(crate) fn launch(&self, launch: &Launch<'_>) -> Result<()> {
        let pipeline = self.pipeline(launch.module, launch.entry);
        // An empty params array is not a valid binding: keep one word.
        let words: Vec<u32> = match launch.params {
            [] => vec![0],
            p => p.to_vec(),
        };
        let params = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params.as_entire_binding(),
        }];
        for (i, array) in launch.arrays.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: array.raw().as_entire_binding(),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            let (x, y, z) = launch.groups;
            pass.dispatch_workgroups(x, y, z);
        }
        self.queue.submit([encoder.finish()]);
        Ok(())
    }
}

/// Workgroups of `size` threads to cover `n` items, as a grid within the per-dimension
/// limit (65535): kernels take the item index from `x + y * 65535 * size`.
pub(crate) fn groups_for(n: usize, size: usize) -> (u32, u32, u32) {
    let groups = n.div_ceil(size).max(1);
    let x = groups.min(65535);
    (x as u32, groups.div_ceil(65535) as u32, 1)
}
