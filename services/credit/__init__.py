"""Credit: an explainable points scorecard and the "310" small-business loan."""
