"""Chicago taxi trips: predict whether a rider tips more than 20% of the fare."""
