"""Closed-loop evaluation in the sim: sim_rollout runs an agent (the scripted experts now, the
policy with the training issue) against SimWorld through the arm driver's real controllers in
sim time, without ROS; rollouts through the node graph, success rates and videos come with the
training issue. It combines the sim with the control layer, so it sits at the top layer."""
