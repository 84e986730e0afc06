// The data library in one include: datasets (IDX/Fashion-MNIST, CIFAR binary, image folders,
// synthetic), per-sample transforms and the deterministic, prefetching DataLoader.
#pragma once
#include "data/cifar.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/transforms.h"
