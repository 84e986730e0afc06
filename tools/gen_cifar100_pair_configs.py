#!/usr/bin/env python3
"""Writes the CIFAR-100 configs of the literature's benchmark pairs that configs/cifar100/ does not
hand-write: the teachers and students of the CRD table's 13 pairs (methods.md, "Reference results")
beyond resnet32x4/resnet56/wrn_40_2 -> resnet8x4/resnet20/wrn_16_2, and for each of the other 10 pairs
the methods the literature reports there — KD, FitNet, AT and CRD (the CRD table), DKD where mdistiller
ships a config (its per-pair beta), ReviewKD where methods.md §1.7 gives the pair's weight.

Every config is one of configs/cifar100/*_resnet32x4_resnet8x4.json with the pair's architectures, names
and the students' learning rate changed (0.01 for MobileNetV2 / ShuffleV1 / ShuffleV2, methods.md §0);
feature taps are left to each network's stages (docs/methods/README.md, "Taps and stages").

Usage: python3 tools/gen_cifar100_pair_configs.py [CONFIG_DIR]   (default: configs/cifar100)
"""
import copy
import json
import os
import sys

# (teacher, student): the CRD table's pairs not hand-written in configs/cifar100/.
PAIRS = [
    ("wrn_40_2", "wrn_40_1"),
    ("resnet110", "resnet20"),
    ("resnet110", "resnet32"),
    ("vgg13", "vgg8"),
    ("vgg13", "MobileNetV2"),
    ("ResNet50", "MobileNetV2"),
    ("ResNet50", "vgg8"),
    ("resnet32x4", "ShuffleV1"),
    ("resnet32x4", "ShuffleV2"),
    ("wrn_40_2", "ShuffleV1"),
]
SMALL_LR_STUDENTS = {"MobileNetV2", "ShuffleV1", "ShuffleV2"}  # RepDistiller / mdistiller: lr 0.01
# mdistiller configs/cifar100/dkd/*.yaml (methods.md §1.4); pairs without one get no DKD config.
DKD_BETA = {
    ("wrn_40_2", "wrn_40_1"): 6, ("resnet110", "resnet32"): 2, ("vgg13", "vgg8"): 6,
    ("vgg13", "MobileNetV2"): 6, ("ResNet50", "MobileNetV2"): 8, ("resnet32x4", "ShuffleV1"): 8,
    ("resnet32x4", "ShuffleV2"): 8, ("wrn_40_2", "ShuffleV1"): 8,
}
# ReviewKD's official CIFAR scripts (methods.md §1.7); pairs without a weight get no ReviewKD config.
REVIEWKD_WEIGHT = {
    ("wrn_40_2", "wrn_40_1"): 5.0, ("wrn_40_2", "ShuffleV1"): 5.0, ("resnet32x4", "ShuffleV1"): 5.0,
    ("resnet32x4", "ShuffleV2"): 8.0, ("resnet110", "resnet32"): 1.0,
}
TEACHERS = ["vgg13", "ResNet50", "resnet110"]
STUDENTS = ["wrn_40_1", "resnet32", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2"]


def lr_of(student):
    return 0.01 if student in SMALL_LR_STUDENTS else 0.05


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "configs/cifar100"
    load = lambda name: json.load(open(os.path.join(out, name)))
    written = []

    def write(name, cfg):
        cfg["experiment"]["name"] = name
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        written.append(name)

    single = load("teacher_resnet32x4.json")  # a plain CE run of one network
    for arch in TEACHERS + STUDENTS:
        cfg = copy.deepcopy(single)
        cfg["model"]["arch"] = arch
        cfg["solver"]["lr"] = lr_of(arch)
        write(("teacher_" if arch in TEACHERS else "baseline_") + arch, cfg)

    for method in ["kd", "fitnet", "at", "crd", "dkd", "reviewkd"]:
        template = load(method + "_resnet32x4_resnet8x4.json")
        for teacher, student in PAIRS:
            if method == "dkd" and (teacher, student) not in DKD_BETA:
                continue
            if method == "reviewkd" and (teacher, student) not in REVIEWKD_WEIGHT:
                continue
            cfg = copy.deepcopy(template)
            cfg["model"]["arch"] = student
            cfg["teacher"]["arch"] = teacher
            cfg["teacher"]["checkpoint"] = f"runs/cifar100/teacher_{teacher}/model.safetensors"
            cfg["solver"]["lr"] = lr_of(student)
            for term in cfg["distill"]["terms"]:
                params = term.get("params", {})
                for key in ["student_tap", "teacher_tap", "student_taps", "teacher_taps"]:
                    if key in params and method != "crd":  # CRD reads :pooled, any network
                        del params[key]  # each network's own stages (the strategy's default)
                if term["type"] == "dkd":
                    params["beta"] = DKD_BETA[(teacher, student)]
                if term["type"] == "reviewkd":
                    term["weight"] = REVIEWKD_WEIGHT[(teacher, student)]
                if "params" in term and not params:
                    del term["params"]
            write(f"{method}_{teacher}_{student}", cfg)
    print(f"wrote {len(written)} configs under {out}")


if __name__ == "__main__":
    main()
