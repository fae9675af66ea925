-- The projector keeps its read models in a database of its own.
CREATE DATABASE coi_projections;
