//! Every WGSL kernel of the wgpu backend translates, with naga (what wgpu itself uses), to
//! MSL for Metal and to SPIR-V for Vulkan without an error, so a kernel the Apple GPU
//! cannot take fails here, on a machine without one. MSL is written as wgpu's Metal
//! backend asks for it: version 2.4 (Metal 3's minimum is 3.0; 2.4 is the oldest Apple
//! Silicon runs), each binding of group 0 at the buffer slot of its number, the runtime
//! array sizes in the slot after them, bounds checks on. Compiling the MSL needs Apple's
//! compiler and is not done here (README: how a Mac runs the wgpu tests).

use minerva_core::backends::wgpu::{module_source, KERNELS};
use naga::back::msl;
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// The MSL binding map of each entry point: binding n of group 0 at buffer slot n.
fn metal_bindings(module: &naga::Module) -> msl::EntryPointResourceMap {
    let mut resources = msl::BindingMap::new();
    let mut slots = 0;
    for (_, global) in module.global_variables.iter() {
        if let Some(binding) = &global.binding {
            let mutable = matches!(
                global.space,
                naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE)
            );
            resources.insert(
                *binding,
                msl::BindTarget {
                    buffer: Some(binding.binding as u8),
                    mutable,
                    ..Default::default()
                },
            );
            slots = slots.max(binding.binding + 1);
        }
    }
    module
        .entry_points
        .iter()
        .map(|ep| {
            let entry = msl::EntryPointResources {
                resources: resources.clone(),
                immediates_buffer: None,
                sizes_buffer: Some(slots as u8),
            };
            (ep.name.clone(), entry)
        })
        .collect()
}

#[test]
fn every_kernel_translates_to_msl_and_spirv() {
    let mut entries = 0;
    for name in KERNELS {
        let source = module_source(name).expect("a listed module");
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(&source)));
        let info = Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}.wgsl does not validate: {e:?}"));
        let options = msl::Options {
            lang_version: (2, 4),
            per_entry_point_map: metal_bindings(&module),
            fake_missing_bindings: false,
            ..Default::default()
        };
        let pipeline = msl::PipelineOptions::default();
        let (metal, translation) = msl::write_string(&module, &info, &options, &pipeline)
            .unwrap_or_else(|e| panic!("{name}.wgsl to MSL: {e:?}"));
        for (i, entry) in translation.entry_point_names.iter().enumerate() {
            assert!(entry.is_ok(), "{name}.wgsl entry {i} to MSL: {entry:?}");
        }
        assert!(metal.contains("kernel void"), "{name}: MSL has its kernels");
        assert!(
            metal.contains("[[buffer(1)]]"),
            "{name}: bindings at their buffer slots"
        );
        let spirv = naga::back::spv::write_vec(&module, &info, &Default::default(), None)
            .unwrap_or_else(|e| panic!("{name}.wgsl to SPIR-V: {e:?}"));
        assert_eq!(spirv[0], 0x0723_0203, "{name}: SPIR-V magic number");
        entries += module.entry_points.len();
    }
    assert!(
        entries >= 12,
        "every module's entry points were translated ({entries})"
    );
}
