"""Speech engines behind one small interface each (base.py): local (offline) and Azure."""
