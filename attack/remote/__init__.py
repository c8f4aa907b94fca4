"""Programs the drills run away from the controller's own process: inside.py in a cluster machine (sent
on stdin to its histo Python), flood.py in the flood's network namespace."""
