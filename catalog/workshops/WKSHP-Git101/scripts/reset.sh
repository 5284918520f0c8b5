#!/bin/bash
# Forget the remote repository of $STUDENT when the seat is reset.
set -eu
rm -rf "/srv/git/$STUDENT.git"
