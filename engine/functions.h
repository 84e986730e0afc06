// Every function of the engine, one header per family; all differentiable except the row lookups of
// index.h (tables that are state, not parameters).
#pragma once
#include "engine/functions/conv.h"
#include "engine/functions/elementwise.h"
#include "engine/functions/index.h"
#include "engine/functions/linalg.h"
#include "engine/functions/loss.h"
#include "engine/functions/norm.h"
#include "engine/functions/pool.h"
#include "engine/functions/reduce.h"
#include "engine/functions/sample.h"
#include "engine/functions/shape.h"
