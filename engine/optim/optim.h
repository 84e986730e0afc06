// Every optimizer and learning-rate schedule of the engine (umbrella header).
#pragma once
#include "engine/optim/adam.h"
#include "engine/optim/lr_schedule.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/sgd.h"
