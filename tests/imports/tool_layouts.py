"""Files in the layouts other tools write, by the same calls their code makes.

thingsvision and Net2Brain do not install here (CUDA torch, tensorflow), so their saving code
is reproduced line for line from their repositories (thingsvision 2.7.3, commit 57e91c97:
``thingsvision/utils/storing/helpers.py``, ``core/extraction/base.py``,
``utils/data/helpers.py``; Net2Brain 1.3.1, commit b59ed47d: ``net2brain/feature_extraction.py``;
platonic-rep commit dcd76ba3: ``extract_features.py``; model-tools commit 75365b54:
``model_tools/activations/core.py``; brainio 1.1.0: ``brainio/packaging.py``).
"""

from __future__ import annotations

import os
import re

import h5py
import numpy as np
import scipy.io
import xarray as xr

EXTENSIONS = r"(.eps|.jpg|.jpeg|.png|.PNG|.tif|.tiff)$"


def rm_suffix(img_name: str) -> str:
    return re.sub(EXTENSIONS, "", img_name)


# --- thingsvision ---------------------------------------------------------------------------

def thingsvision_file_names(out_path: str, image_names: list[str]) -> None:
    """``make_instance_dataset``: the images' order, one name per line."""
    with open(os.path.join(out_path, "file_names.txt"), "w") as f:
        for image_name in image_names:
            f.write(f"{image_name}\n")


def thingsvision_store_features(root: str, features, file_format: str) -> None:
    """``store_features`` (what ``save_features`` calls)."""
    import torch

    os.makedirs(root, exist_ok=True)
    if file_format == "npy":
        with open(os.path.join(root, "features.npy"), "wb") as f:
            np.save(f, features)
    elif file_format == "pt":
        torch.save(features, os.path.join(root, "features.pt"))
    elif file_format == "mat":
        try:
            with open(os.path.join(root, "file_names.txt")) as f:
                file_names = [rm_suffix(line.strip()) for line in f]
            features = dict(zip(file_names, features, strict=False))
            scipy.io.savemat(os.path.join(root, "features.mat"), features)
        except FileNotFoundError:
            scipy.io.savemat(os.path.join(root, "features.mat"), {"features": features})
    elif file_format == "hdf5":
        h5f = h5py.File(os.path.join(root, "features.hdf5"), "w")
        h5f.create_dataset("features", data=features)
        h5f.close()
    else:  # txt
        np.savetxt(os.path.join(root, "features.txt"), features)


def thingsvision_split_features(root: str, features, file_format: str, n_splits: int) -> None:
    """``split_features`` (npy, pt and hdf5 branches)."""
    import torch

    splits = np.linspace(0, len(features), n_splits, dtype=int)
    if file_format == "hdf5":
        h5f = h5py.File(os.path.join(root, "features.hdf5"), "w")
    for i in range(1, len(splits)):
        feature_split = features[splits[i - 1]: splits[i]]
        if file_format == "npy":
            with open(os.path.join(root, f"features_{i:02d}.npy"), "wb") as f:
                np.save(f, feature_split)
        elif file_format == "pt":
            torch.save(feature_split, os.path.join(root, f"features_{i:02d}.pt"))
        elif file_format == "hdf5":
            h5f.create_dataset(f"features_{i:02d}", data=feature_split)
    if file_format == "hdf5":
        h5f.close()


def thingsvision_extract_to_dir(per_module: dict[str, np.ndarray], output_dir: str,
                                batch_size: int, step_size: int, suffix: str = "",
                                save_in_one_file: bool = False) -> None:
    """The saving part of ``extract_features(output_dir=..., output_type="ndarray")``."""
    n = len(next(iter(per_module.values())))
    batches = [slice(i, i + batch_size) for i in range(0, n, batch_size)]
    features = {m: [] for m in per_module}
    files = {m: [] for m in per_module}
    image_ct, last_image_ct = 0, 0
    for i, batch in enumerate(batches, start=1):
        image_ct += len(range(n)[batch])
        for module_name, acts in per_module.items():
            features[module_name].append(acts[batch])
            if i % step_size == 0 or i == len(batches):
                curr_output_dir = os.path.join(output_dir, module_name)
                os.makedirs(curr_output_dir, exist_ok=True)
                features_subset = np.vstack(features[module_name])
                path = os.path.join(curr_output_dir,
                                    f"features{suffix}_{last_image_ct}-{image_ct}.npy")
                np.save(path, features_subset)
                files[module_name].append(path)
                features[module_name] = []
        if i % step_size == 0 or i == len(batches):
            last_image_ct = image_ct
    if save_in_one_file:
        for module_name in per_module:
            loaded = [np.load(f) for f in files[module_name]]
            np.save(os.path.join(output_dir, f"{module_name}/features{suffix}") + ".npy",
                    np.concatenate(loaded))
            for f in files[module_name]:
                os.remove(f)


# --- Net2Brain ------------------------------------------------------------------------------

def net2brain_extract(save_path: str, per_image: dict[str, dict[str, np.ndarray]]) -> None:
    """``FeatureExtractor.extract``'s writing: ``np.savez`` per image, keys = layers."""
    os.makedirs(save_path, exist_ok=True)
    for image_file, final_features in per_image.items():
        file_name = str(image_file).split(os.sep)[-1].split(".")[0]
        np.savez(os.path.join(save_path, f"{file_name}.npz"), **final_features)


def net2brain_consolidate_per_layer(save_path: str) -> None:
    """``FeatureExtractor.consolidate_per_layer``, verbatim but for the prints."""
    all_files = [f for f in os.listdir(save_path) if not f.startswith("consolidated_")]
    sample_file_path = os.path.join(save_path, all_files[0])
    with np.load(sample_file_path, allow_pickle=True) as data:
        layers = list(data.keys())
    combined_data = {layer: {} for layer in layers}
    for file_name in all_files:
        file_path = os.path.join(save_path, file_name)
        with np.load(file_path, allow_pickle=True) as data:
            for layer in layers:
                if layer not in data or data[layer].size == 0:
                    continue
                image_key = file_name.replace(".npz", "")
                combined_data[layer][image_key] = data[layer]
        os.remove(file_path)
    for layer, data in combined_data.items():
        np.savez_compressed(os.path.join(save_path, f"consolidated_{layer}.npz"), **data)


# --- Brain-Score ----------------------------------------------------------------------------

def model_tools_assembly(layers: dict[str, np.ndarray], stimuli_paths: list[str],
                         identifier: str) -> xr.DataArray:
    """``ActivationsExtractorHelper._package``: the layers' flattened activations, neuroid
    coordinates per ``_package_layer``, concatenated along ``neuroid``, with a MultiIndex
    per dim as brainio's ``DataAssembly`` builds (``gather_indexes``)."""
    values, coords = [], {}
    for layer, acts in layers.items():
        flat = acts.reshape(len(acts), -1)
        index = np.array(list(np.ndindex(*acts.shape[1:])))
        names = (["channel", "channel_x", "channel_y"] if acts.ndim in (2, 4) else
                 ["channel", "embedding"])
        layer_coords = {"neuroid_num": np.arange(flat.shape[1]),
                        "model": np.array([identifier] * flat.shape[1]),
                        "layer": np.array([layer] * flat.shape[1])}
        for i, name in enumerate(names):
            layer_coords[name] = (index[:, i].astype(float) if i < index.shape[1]
                                  else np.full(flat.shape[1], np.nan))
        layer_coords["neuroid_id"] = np.array([f"{identifier}.{layer}.{k}"
                                               for k in range(flat.shape[1])])
        values.append(flat)
        for name, v in layer_coords.items():
            coords.setdefault(name, []).append(v)
    neuroid = {name: ("neuroid", np.concatenate(v)) for name, v in coords.items()}
    assembly = xr.DataArray(
        np.concatenate(values, axis=1), dims=("presentation", "neuroid"),
        coords={"stimulus_path": ("presentation", stimuli_paths),
                "stimulus_id": ("presentation", [rm_suffix(os.path.basename(p))
                                                 for p in stimuli_paths]),
                **neuroid})
    return assembly.set_index(presentation=["stimulus_path", "stimulus_id"],
                              neuroid=list(neuroid))


def brainio_write_netcdf(assembly: xr.DataArray, target_netcdf_file: str,
                         compress: bool = True) -> None:
    """brainio's ``write_netcdf``."""
    assembly = assembly.copy()
    assembly = assembly.reset_index(list(assembly.indexes))
    if compress:
        ds = assembly.to_dataset(name="data", promote_attrs=True)
        encoding = {var: dict(zlib=True, complevel=9) for var in ds.data_vars}
        ds.to_netcdf(target_netcdf_file, mode="w", encoding=encoding)
    else:
        assembly.to_netcdf(target_netcdf_file, mode="w")
